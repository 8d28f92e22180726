// SPDX-License-Identifier: Apache-2.0
// memberlist wire codec: msgpack subset, message round trips, compound/CRC/label framing,
// AES-GCM framing, LZW, and hostile input (truncation at every offset, random bytes).

#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "membership/codec.hpp"
#include "membership/lzw.hpp"
#include "membership/msgpack.hpp"
#include "membership/wire.hpp"

using namespace brokerha::membership;

namespace {

std::string body_of(const std::string& msg) { return msg.substr(1); }

std::string random_bytes(std::mt19937& rng, std::size_t n) {
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng() & 0xFF);
  return s;
}

}  // namespace

TEST_CASE("membership codec msgpack writes the legacy raw family and smallest integers") {
  std::string out;
  msgpack::Writer w(out);
  w.uint(5);
  w.uint(200);
  w.uint(70000);
  w.raw("abc");
  w.raw(std::string(40, 'x'));
  w.bytes("");
  w.sint(-3);
  CHECK(static_cast<std::uint8_t>(out[0]) == 0x05);
  CHECK(static_cast<std::uint8_t>(out[1]) == 0xCC);
  CHECK(static_cast<std::uint8_t>(out[3]) == 0xCE);
  CHECK(static_cast<std::uint8_t>(out[8]) == 0xA3);
  CHECK(static_cast<std::uint8_t>(out[12]) == 0xDA);  // str16 for 40 bytes, never str8
  msgpack::Reader r(out);
  std::uint64_t u = 0;
  std::string s;
  std::int64_t i = 0;
  CHECK(r.uint(u));
  CHECK(u == 5);
  CHECK(r.uint(u));
  CHECK(u == 200);
  CHECK(r.uint(u));
  CHECK(u == 70000);
  CHECK(r.raw(s));
  CHECK(s == "abc");
  CHECK(r.raw(s));
  CHECK(s.size() == 40);
  CHECK(r.raw(s));
  CHECK(s.empty());
  CHECK(r.sint(i));
  CHECK(i == -3);
  CHECK(r.remaining() == 0);
  CHECK_FALSE(r.uint(u));
  CHECK(r.truncated());
}

TEST_CASE("membership codec msgpack reader rejects deep nesting and huge lengths") {
  std::string deep(100, static_cast<char>(0x91));
  deep.push_back(0x01);
  msgpack::Reader r(deep);
  CHECK_FALSE(r.skip());
  const std::string huge = "\xdb\xff\xff\xff\xff";
  msgpack::Reader r2(huge);
  std::string s;
  CHECK_FALSE(r2.raw(s));
  const std::string arr = "\xdd\xff\xff\xff\xff";
  msgpack::Reader r3(arr);
  CHECK_FALSE(r3.skip());
}

TEST_CASE("membership codec message round trips") {
  Ping p{7, "n1", std::string("\x7f\0\0\x01", 4), 7946, "src"};
  Ping p2;
  const std::string pe = encode(p);
  CHECK(pe[0] == 0);
  REQUIRE(decode(body_of(pe), p2));
  CHECK(p2.seq_no == 7);
  CHECK(p2.node == "n1");
  CHECK(p2.source_addr == p.source_addr);
  CHECK(p2.source_port == 7946);
  CHECK(p2.source_node == "src");
  Ping bare{9, "x", "", 0, ""};
  CHECK(encode(bare) == std::string("\x00\x82\xa4Node\xa1x\xa5SeqNo\x09", 16));

  IndirectPing ip{1, std::string("\x0a\0\0\x02", 4), 100, "t", true, "", 0, ""};
  IndirectPing ip2;
  REQUIRE(decode(body_of(encode(ip)), ip2));
  CHECK(ip2.target == ip.target);
  CHECK(ip2.port == 100);
  CHECK(ip2.nack);

  Ack a{0xFFFFFFFFu, ""};
  Ack a2;
  REQUIRE(decode(body_of(encode(a)), a2));
  CHECK(a2.seq_no == 0xFFFFFFFFu);
  Nack nk{3};
  Nack nk2;
  REQUIRE(decode(body_of(encode(nk)), nk2));
  CHECK(nk2.seq_no == 3);

  Suspect s{4, "a", "b"};
  Suspect s2;
  CHECK(encode_suspect(s)[0] == 3);
  CHECK(encode_dead(s)[0] == 5);
  REQUIRE(decode(body_of(encode_dead(s)), s2));
  CHECK(s2.incarnation == 4);
  CHECK(s2.from == "b");

  Alive al{2, "node", std::string("\x0a\0\0\x01", 4), 7946, "meta", std::string("\1\5\2\0\0\0", 6)};
  Alive al2;
  REQUIRE(decode(body_of(encode(al)), al2));
  CHECK(al2.addr == al.addr);
  CHECK(al2.meta == "meta");
  CHECK(al2.vsn == al.vsn);

  PushPull pp;
  pp.header.join = true;
  for (int i = 0; i < 20; ++i) {
    pp.nodes.push_back({"n" + std::to_string(i), std::string("\x0a\0\0\x01", 4),
                        static_cast<std::uint16_t>(i), "", static_cast<std::uint32_t>(i),
                        static_cast<NodeState>(i % 4), std::string("\1\5\2\0\0\0", 6)});
  }
  pp.user_state = "user-state";
  const std::string ppe = encode(pp);
  PushPull pp2;
  bool truncated = false;
  CHECK(decode_push_pull(body_of(ppe), pp2, truncated) == ppe.size() - 1);
  CHECK(pp2.header.join);
  REQUIRE(pp2.nodes.size() == 20);
  CHECK(pp2.nodes[6].state == NodeState::dead);
  CHECK(pp2.nodes[7].state == NodeState::left);
  CHECK(pp2.nodes[19].incarnation == 19);
  CHECK(pp2.user_state == "user-state");
  for (std::size_t cut = 1; cut < ppe.size(); ++cut) {
    CHECK(decode_push_pull(std::string_view(ppe).substr(1, cut - 1), pp2, truncated) == 0);
    CHECK(truncated);
  }

  std::string up;
  REQUIRE(decode_user_stream(body_of(encode_user_stream("hello")), up));
  CHECK(up == "hello");
}

TEST_CASE("membership codec compound crc and label framing") {
  std::vector<std::string> parts = {encode(Nack{1}), encode(Nack{2}), encode_user("u")};
  const std::string c = make_compound(parts);
  std::vector<std::string_view> out;
  std::size_t trunc = 0;
  const std::string body = body_of(c);  // `out` views into it
  REQUIRE(split_compound(body, out, trunc));
  CHECK(out.size() == 3);
  CHECK(trunc == 0);
  CHECK(out[2] == parts[2]);
  REQUIRE(split_compound(std::string_view(c).substr(1, c.size() - 2), out, trunc));
  CHECK(out.size() == 2);
  CHECK(trunc == 1);
  CHECK_FALSE(split_compound("\x05\x00", out, trunc));

  std::vector<std::string> many(600, encode(Nack{1}));
  const auto cs = make_compounds(many);
  CHECK(cs.size() == 3);
  CHECK(static_cast<std::uint8_t>(cs[2][1]) == 90);

  CHECK(crc32_ieee("123456789") == 0xCBF43926u);
  std::string_view inner;
  const std::string crc = add_crc("payload");
  const std::string crc_body = body_of(crc);  // `inner` views into it
  CHECK(check_crc(crc_body, inner));
  CHECK(inner == "payload");
  std::string bad = crc;
  bad.back() ^= 1;
  const std::string bad_body = body_of(bad);
  CHECK_FALSE(check_crc(bad_body, inner));

  std::string label;
  std::string_view rest;
  const std::string labelled = add_label("prod", "x");  // `rest` views into it
  REQUIRE(strip_label(labelled, label, rest));
  CHECK(label == "prod");
  CHECK(rest == "x");
  CHECK_FALSE(strip_label("\xf4", label, rest));
  CHECK_FALSE(
      strip_label("\xf4\x05"
                  "ab",
                  label, rest));
}

TEST_CASE("membership codec aes gcm keyring") {
  for (std::size_t len : {16u, 24u, 32u}) {
    Keyring k;
    REQUIRE(k.add_key(std::string(len, 'k')));
    const std::string blob = k.encrypt("secret", "label");
    CHECK(blob.size() == 6 + kEncryptOverhead);
    CHECK(blob[0] == 1);
    std::string plain;
    CHECK(k.decrypt(blob, "label", plain));
    CHECK(plain == "secret");
    CHECK_FALSE(k.decrypt(blob, "other", plain));
    std::string bad = blob;
    bad[20] ^= 1;
    CHECK_FALSE(k.decrypt(bad, "label", plain));
  }
  Keyring k;
  CHECK_FALSE(k.add_key("short"));
  REQUIRE(k.add_key(std::string(16, 'a')));
  // Version 0 (PKCS#7) blobs from protocol-1 peers decrypt too.
  const std::string v0 = gcm_encrypt(0, std::string(16, 'a'), std::string(12, 'n'), "abc", "");
  std::string plain;
  CHECK(k.decrypt(v0, "", plain));
  CHECK(plain == "abc");
  // Rotation: a packet under a secondary key still decrypts.
  Keyring old;
  old.add_key(std::string(32, 'b'));
  const std::string blob = old.encrypt("x", "");
  CHECK_FALSE(k.decrypt(blob, "", plain));
  k.add_key(std::string(32, 'b'));
  CHECK(k.decrypt(blob, "", plain));
  CHECK(k.use_key(std::string(32, 'b')));
  CHECK(k.remove_key(std::string(16, 'a')));
  CHECK_FALSE(k.remove_key(std::string(32, 'b')));
}

TEST_CASE("membership codec lzw round trips and rejects garbage") {
  std::mt19937 rng(1);
  std::vector<std::string> inputs = {"", "a", "abababababababab", std::string(100000, 'z'),
                                     random_bytes(rng, 20000)};
  std::string text;
  for (int i = 0; i < 5000; ++i) text += "node-" + std::to_string(i % 97) + " alive ";
  inputs.push_back(text);
  for (const auto& in : inputs) {
    std::string out;
    REQUIRE(lzw_decompress(lzw_compress(in), out));
    CHECK(out == in);
  }
  CHECK(lzw_compress(text).size() < text.size() / 4);
  // Known vector: Go's lzw.NewWriter(w, lzw.LSB, 8) of "TOBEORNOT" starts with the clear code.
  const std::string z = lzw_compress("TOBEORNOT");
  CHECK(static_cast<std::uint8_t>(z[0]) == 0x00);
  CHECK((static_cast<std::uint8_t>(z[1]) & 0x01) == 0x01);
  std::string out;
  CHECK_FALSE(lzw_decompress("", out));
  CHECK_FALSE(lzw_decompress(lzw_compress(text), out, 100));
  for (int i = 0; i < 2000; ++i) lzw_decompress(random_bytes(rng, rng() % 64), out, 1 << 16);
}

TEST_CASE("membership codec packet and stream pipelines") {
  CodecConfig plain;
  CodecConfig enc;
  enc.keyring.add_key("0123456789abcdef");
  enc.label = "cluster-a";
  const std::string msg = encode(
      Alive{1, "n", std::string(4, 'a'), 1, std::string(300, 'm'), std::string("\1\5\2\0\0\0", 6)});
  for (const CodecConfig* c : {&plain, &enc}) {
    std::string got;
    REQUIRE(decode_packet(*c, encode_packet(*c, msg, true), got) == DecodeStatus::ok);
    std::string un = got;
    if (static_cast<MsgType>(un[0]) == MsgType::compress) {
      REQUIRE(decompress_message(body_of(got), un) == DecodeStatus::ok);
    }
    CHECK(un == msg);
    PushPull pp;
    pp.nodes.push_back({"a", std::string(4, 'x'), 1, "", 1, NodeState::alive, ""});
    pp.user_state = "us";
    const std::string wire = encode_stream(*c, encode(pp));
    std::string sm;
    std::size_t used = 0;
    REQUIRE(decode_stream(*c, wire + "trailing", sm, used) == DecodeStatus::ok);
    CHECK(used == wire.size());
    CHECK(sm == encode(pp));
    for (std::size_t cut = 0; cut < wire.size(); ++cut) {
      CHECK(decode_stream(*c, wire.substr(0, cut), sm, used) == DecodeStatus::need_more);
    }
  }
  std::string got;
  CHECK(decode_packet(enc, encode_packet(plain, msg, false), got) == DecodeStatus::bad_label);
  CodecConfig other = enc;
  other.keyring = Keyring();
  other.keyring.add_key("fedcba9876543210");
  CHECK(decode_packet(other, encode_packet(enc, msg, false), got) == DecodeStatus::auth_failed);
  CodecConfig nolabel;
  nolabel.keyring.add_key("0123456789abcdef");
  CHECK(decode_packet(nolabel, encode_packet(plain, msg, false), got) == DecodeStatus::auth_failed);
  std::string crc = encode_packet(plain, msg, true);
  crc.back() ^= 0x40;
  CHECK(decode_packet(plain, crc, got) == DecodeStatus::bad_crc);
}

TEST_CASE("membership codec hostile input never crashes") {
  std::mt19937 rng(42);
  CodecConfig plain;
  CodecConfig enc;
  enc.keyring.add_key("0123456789abcdef");
  for (int i = 0; i < 20000; ++i) {
    const std::string b = random_bytes(rng, rng() % 80);
    std::string msg;
    std::size_t used = 0;
    decode_packet(plain, b, msg);
    decode_packet(enc, b, msg);
    decode_stream(plain, b, msg, used);
    Ping p;
    Alive a;
    PushPull pp;
    bool t = false;
    decode(b, p);
    decode(b, a);
    decode_push_pull(b, pp, t);
    std::vector<std::string_view> parts;
    std::size_t tr = 0;
    split_compound(b, parts, tr);
    msgpack::Reader r(b);
    r.skip();
  }
}
