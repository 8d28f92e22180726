// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the membership (memberlist) decoders and the protocol core:
// membership::decode_packet, decode_stream, and Core::on_packet / on_stream / on_stream_reply.
//
// Input: one configuration byte, then the data.
//   config bit 0  the codec has a 16-byte AES-GCM key (kKey)
//   config bit 1  the codec has the label "fz"
//   config bit 2  verify_incoming = false (plaintext accepted next to encrypted input)
//   config bit 3  skip_inbound_label_check
//   config bit 4  enable_compression = false
//   config bit 5  the data is a sequence of records [route][u16 BE length][bytes] (a record
//                 cut short takes what is left); otherwise the data is one record sent every
//                 route.
// Routes (route byte % 6) into a Core named "me" that knows two members, "b" and "c", both
// alive (their alives are fed through the same codec):
//   0 on_packet(bytes)                  1 on_packet(encode_packet(bytes)), CRC if route & 8
//   2 on_stream(bytes)                  3 on_stream(encode_stream(bytes))
//   4 on_stream_reply(bytes) to the oldest stream request the Core made (a join push-pull is
//     pending from the start); 5 advance the clock by (route >> 3) * 50 ms.
// Routes 1 and 3 get plaintext messages past encryption, CRC and label, so the Core's message
// handling is reached under every codec configuration.
//
// Oracles on every record (a violation calls __builtin_trap()):
//  - decode_packet / decode_stream never crash; a stream decoded `ok` consumed at most the input,
//    and its message is not empty.
//  - decode_stream on the consumed prefix gives the same message; a strict prefix of a complete
//    stream says need_more (a socket reader stops on anything else).
//  - A decoded message re-encodes (encode_packet / encode_stream with the same codec) to bytes
//    that decode to the same message. For streams: when the message is one stream message
//    (a decompressed message need not be, and may carry trailing bytes, as in memberlist);
//    sent uncompressed, exactly that one message is read back.
// Everything is local to one call: no state survives an iteration.
//
// Seeds: tests/fuzz/corpus/membership/, written by this binary when MEMBERSHIP_FUZZ_WRITE_SEEDS
// names a directory (see LLVMFuzzerInitialize). Keep JSON out of this target.

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "membership/codec.hpp"
#include "membership/core.hpp"
#include "membership/wire.hpp"

namespace {

namespace mb = brokerha::membership;
using namespace std::chrono_literals;

#define FUZZ_CHECK(cond)                                                                       \
  do {                                                                                         \
    if (!(cond)) {                                                                             \
      std::fprintf(stderr, "membership_fuzz: check failed at line %d: %s\n", __LINE__, #cond); \
      __builtin_trap();                                                                        \
    }                                                                                          \
  } while (false)

constexpr std::string_view kKey = "0123456789abcdef";
constexpr std::string_view kLabel = "fz";

enum : std::uint8_t {
  kCfgKey = 1,
  kCfgLabel = 2,
  kCfgPlainOk = 4,
  kCfgSkipLabel = 8,
  kCfgNoCompress = 16,
  kCfgRecords = 32,
};

mb::CodecConfig make_codec(std::uint8_t config) {
  mb::CodecConfig c;
  if ((config & kCfgKey) != 0) c.keyring.add_key(kKey);
  if ((config & kCfgLabel) != 0) c.label = std::string(kLabel);
  c.verify_incoming = (config & kCfgPlainOk) == 0;
  c.skip_inbound_label_check = (config & kCfgSkipLabel) != 0;
  c.enable_compression = (config & kCfgNoCompress) == 0;
  c.max_stream = 1u << 20;
  return c;
}

mb::Address addr(int i) { return {std::string{10, 0, 0, static_cast<char>(i)}, 7946}; }
std::string vsn() { return std::string("\1\5\2\0\0\0", 6); }

struct Output : mb::CoreOutput {
  std::deque<std::uint64_t> streams;  // ids awaiting a reply
  std::size_t packets = 0;
  void send_packet(const mb::Address&, std::string) override { ++packets; }
  void send_stream(std::uint64_t id, const mb::Address&, std::string, bool expect_reply) override {
    if (expect_reply) streams.push_back(id);
  }
};

// Types whose re-encoding is not the identity under the outer layers (they are outer layers).
bool outer_type(char c) {
  const auto t = static_cast<mb::MsgType>(static_cast<unsigned char>(c));
  return t == mb::MsgType::compress || t == mb::MsgType::encrypt || t == mb::MsgType::has_crc ||
         t == mb::MsgType::has_label;
}

void check_codec(const mb::CodecConfig& c, std::string_view in) {
  std::string msg;
  if (mb::decode_packet(c, in, msg) == mb::DecodeStatus::ok && !msg.empty() &&
      !outer_type(msg[0])) {
    mb::CodecConfig plain = c;
    plain.enable_compression = false;  // compression would hand back the compress wrapper
    for (const bool crc : {false, true}) {
      std::string again;
      FUZZ_CHECK(mb::decode_packet(c, mb::encode_packet(plain, msg, crc), again) ==
                 mb::DecodeStatus::ok);
      FUZZ_CHECK(again == msg);
    }
  }

  msg.clear();
  std::size_t consumed = 0;
  if (mb::decode_stream(c, in, msg, consumed) != mb::DecodeStatus::ok) return;
  FUZZ_CHECK(consumed > 0 && consumed <= in.size());
  FUZZ_CHECK(!msg.empty());
  std::string again;
  std::size_t used = 0;
  FUZZ_CHECK(mb::decode_stream(c, in.substr(0, consumed), again, used) == mb::DecodeStatus::ok);
  FUZZ_CHECK(used == consumed && again == msg);
  for (const std::size_t cut : {std::size_t{1}, consumed / 2, consumed - 1}) {
    if (cut == 0 || cut >= consumed) continue;
    again.clear();
    FUZZ_CHECK(mb::decode_stream(c, in.substr(0, cut), again, used) == mb::DecodeStatus::need_more);
  }
  if (outer_type(msg[0])) return;
  // What a compressed stream message decompresses to is handed on as it is: it need not be one
  // stream message (memberlist reads its type byte and fails later), and it may carry bytes
  // after the message. Round trip only what is one stream message (its first `one` bytes).
  bool more = false;
  const std::size_t one = mb::stream_message_length(msg, more, c.max_stream);
  if (one == 0) return;
  const std::string enc = mb::encode_stream(c, msg);
  again.clear();
  FUZZ_CHECK(mb::decode_stream(c, enc, again, used) == mb::DecodeStatus::ok);
  if (c.enable_compression) {
    FUZZ_CHECK(used == enc.size() && again == msg);
  } else {
    // An encrypted stream is consumed whole (the tail is inside the blob).
    const std::size_t tail = c.keyring.enabled() ? 0 : msg.size() - one;
    FUZZ_CHECK(used == enc.size() - tail && again == msg.substr(0, one));
  }
}

struct Harness {
  mb::CodecConfig codec;
  Output out;
  mb::Core core;
  mb::TimePoint now{0};

  static mb::CoreConfig core_config(const mb::CodecConfig& codec) {
    mb::CoreConfig cfg;
    cfg.name = "me";
    cfg.advertise = addr(1);
    cfg.codec = codec;
    cfg.seed = 7;
    return cfg;
  }

  explicit Harness(const mb::CodecConfig& c) : codec(c), core(core_config(c), out) {
    core.start(now);
    now += 1ms;
    core.on_packet(now, addr(2),
                   mb::encode_packet(
                       codec, mb::encode(mb::Alive{1, "b", addr(2).ip, 7946, "", vsn()}), false));
    core.on_packet(
        now, addr(3),
        mb::encode_packet(codec, mb::encode(mb::Alive{1, "c", addr(3).ip, 7946, "", vsn()}), true));
    core.join(now, {addr(2)});
  }

  /// Lets 2 s pass: every timer due by then fires (probes, suspicion, gossip, push-pull).
  void settle() {
    now += std::chrono::milliseconds(2000);
    core.advance(now);
  }

  void route(std::uint8_t r, std::string_view bytes) {
    now += 1ms;
    switch (r % 6) {
      case 0:
        core.on_packet(now, addr(2), bytes);
        break;
      case 1:
        core.on_packet(now, addr(3), mb::encode_packet(codec, bytes, (r & 8) != 0));
        break;
      case 2:
        (void)core.on_stream(now, addr(2), bytes);
        break;
      case 3:
        (void)core.on_stream(now, addr(3), mb::encode_stream(codec, bytes));
        break;
      case 4:
        if (!out.streams.empty()) {
          const std::uint64_t id = out.streams.front();
          out.streams.pop_front();
          core.on_stream_reply(now, id, std::string(bytes));
        }
        break;
      default:
        now += mb::Duration(std::chrono::milliseconds(50) * (r >> 3));
        core.advance(now);
        break;
    }
  }
};

// ---- seed generator -------------------------------------------------------------------------

void write_file(const std::string& path, const std::string& data) {
  if (FILE* f = std::fopen(path.c_str(), "wb")) {
    std::fwrite(data.data(), 1, data.size(), f);
    std::fclose(f);
  }
}

std::string record(std::uint8_t route, std::string_view bytes) {
  std::string r(1, static_cast<char>(route));
  r += static_cast<char>((bytes.size() >> 8) & 0xFF);
  r += static_cast<char>(bytes.size() & 0xFF);
  r += bytes;
  return r;
}

// Valid messages of every kind, wrapped by the codec of each interesting configuration.
void write_seeds(const std::string& dir) {
  const std::vector<std::pair<std::string, std::string>> msgs = {
      {"ping", mb::encode(mb::Ping{5, "me", addr(2).ip, 7946, "b"})},
      {"indirect",
       mb::encode(mb::IndirectPing{6, addr(3).ip, 7946, "c", true, addr(2).ip, 7946, "b"})},
      {"ack", mb::encode(mb::Ack{1, "x"})},
      {"nack", mb::encode(mb::Nack{1})},
      {"suspect", mb::encode_suspect({1, "b", "c"})},
      {"dead", mb::encode_dead({1, "c", "c"})},
      {"alive", mb::encode(mb::Alive{2, "d", addr(4).ip, 7946, "meta", vsn()})},
      {"refute", mb::encode_suspect({1, "me", "b"})},
      {"user", mb::encode_user("hello")},
      {"userstream", mb::encode_user_stream("hello")},
      {"pushpull",
       mb::encode(mb::PushPull{{2, 3, true},
                               {{"b", addr(2).ip, 7946, "", 1, mb::NodeState::alive, vsn()},
                                {"e", addr(5).ip, 7946, "m", 4, mb::NodeState::dead, vsn()}},
                               "abc"})},
      {"err", mb::encode(mb::ErrResp{"no"})},
      {"compound",
       mb::make_compound({mb::encode(mb::Ack{2, ""}), mb::encode_suspect({2, "b", "c"})})},
      {"compress", mb::compress_message(mb::encode_user("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"))},
  };
  for (const std::uint8_t config : {std::uint8_t{0}, std::uint8_t{kCfgKey | kCfgLabel}}) {
    const mb::CodecConfig c = make_codec(config);
    const std::string tag = config == 0 ? "plain" : "keylabel";
    for (const auto& [name, m] : msgs) {
      const std::string head(1, static_cast<char>(config));
      write_file(dir + "/" + tag + "_packet_" + name, head + mb::encode_packet(c, m, true));
      write_file(dir + "/" + tag + "_stream_" + name, head + mb::encode_stream(c, m));
    }
  }
  // Record sequences: plaintext messages through routes 1 and 3 under encryption and a label,
  // a join reply, and time passing.
  const std::uint8_t cfg = kCfgRecords | kCfgKey | kCfgLabel;
  std::string seq(1, static_cast<char>(cfg));
  seq += record(1, msgs[6].second);  // alive d
  seq += record(9, msgs[4].second);  // suspect b, with CRC
  seq += record(4, mb::encode_stream(make_codec(cfg), msgs[10].second));
  seq += record(3, msgs[0].second);  // ping over a stream
  seq += record(5 | (20 << 3), "");  // 1 s passes
  seq += record(1, msgs[12].second);
  write_file(dir + "/records_mixed", seq);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  if (const char* dir = std::getenv("MEMBERSHIP_FUZZ_WRITE_SEEDS")) {
    write_seeds(dir);
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t config = data[0];
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  Harness h(make_codec(config));

  if ((config & kCfgRecords) == 0) {
    check_codec(h.codec, rest);
    for (std::uint8_t r = 0; r < 6; ++r) h.route(r, rest);
    h.settle();
    return 0;
  }
  std::size_t i = 0;
  while (i < rest.size()) {
    const auto r = static_cast<std::uint8_t>(rest[i]);
    std::size_t len = 0;
    if (i + 3 <= rest.size()) {
      len = (static_cast<std::size_t>(static_cast<unsigned char>(rest[i + 1])) << 8) |
            static_cast<unsigned char>(rest[i + 2]);
    }
    i = std::min(i + 3, rest.size());
    const std::string_view bytes = rest.substr(i, len);
    i += bytes.size();
    check_codec(h.codec, bytes);
    h.route(r, bytes);
  }
  h.settle();
  return 0;
}
