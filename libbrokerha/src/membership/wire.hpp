// SPDX-License-Identifier: Apache-2.0
#pragma once
// memberlist's wire format: message types, the msgpack shape of each message (field names and
// omitempty exactly as memberlist declares them), compound packets, CRC and label framing.
// Map keys are written in alphabetical order: that is what a real peer (Debian's serf 0.9.4,
// memberlist 0.2.2 + go-msgpack) emits, as tests/unit/membership_serf_capture_test.cpp checks.
//
// Byte fields (addresses, meta, payloads, Vsn) are std::string holding raw bytes. An IPv4
// address is 4 bytes, IPv6 16; Go may send IPv4 in either form (normalize_ip folds it).
// Every decoder is bounded and returns false on hostile input; nothing here throws on input.

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace brokerha::membership {

enum class MsgType : std::uint8_t {
  ping = 0,
  indirect_ping = 1,
  ack = 2,
  suspect = 3,
  alive = 4,
  dead = 5,
  push_pull = 6,
  compound = 7,
  user = 8,
  compress = 9,
  encrypt = 10,
  nack = 11,
  has_crc = 12,
  err = 13,
  has_label = 244,
};

enum class NodeState : std::uint8_t { alive = 0, suspect = 1, dead = 2, left = 3 };

struct Ping {
  std::uint32_t seq_no = 0;
  std::string node;
  std::string source_addr;  // omitempty
  std::uint16_t source_port = 0;
  std::string source_node;
};

struct IndirectPing {
  std::uint32_t seq_no = 0;
  std::string target;  // raw IP
  std::uint16_t port = 0;
  std::string node;
  bool nack = false;
  std::string source_addr;  // omitempty
  std::uint16_t source_port = 0;
  std::string source_node;
};

struct Ack {
  std::uint32_t seq_no = 0;
  std::string payload;
};

struct Nack {
  std::uint32_t seq_no = 0;
};

struct Suspect {  // also the shape of Dead
  std::uint32_t incarnation = 0;
  std::string node;
  std::string from;
};
using Dead = Suspect;

struct Alive {
  std::uint32_t incarnation = 0;
  std::string node;
  std::string addr;
  std::uint16_t port = 0;
  std::string meta;
  std::string vsn;  // [pmin, pmax, pcur, dmin, dmax, dcur]
};

struct PushPullHeader {
  std::int64_t nodes = 0;
  std::int64_t user_state_len = 0;
  bool join = false;
};

struct PushNodeState {
  std::string name;
  std::string addr;
  std::uint16_t port = 0;
  std::string meta;
  std::uint32_t incarnation = 0;
  NodeState state = NodeState::alive;
  std::string vsn;
};

struct PushPull {
  PushPullHeader header;
  std::vector<PushNodeState> nodes;
  std::string user_state;
};

struct ErrResp {
  std::string error;
};

struct Compress {
  std::uint8_t algo = 0;  // 0 = LZW
  std::string buf;
};

// --- encoding: each returns the type byte followed by the msgpack body -----------------------
std::string encode(const Ping& m);
std::string encode(const IndirectPing& m);
std::string encode(const Ack& m);
std::string encode(const Nack& m);
std::string encode_suspect(const Suspect& m);
std::string encode_dead(const Dead& m);
std::string encode(const Alive& m);
std::string encode(const PushPull& m);
std::string encode(const ErrResp& m);
std::string encode(const Compress& m);
std::string encode_user(std::string_view payload);  // [user][payload] (packet form)
// The stream form of a user message: [user][msgpack{UserMsgLen}][payload].
std::string encode_user_stream(std::string_view payload);

// --- decoding: `body` is what follows the type byte -----------------------------------------
bool decode(std::string_view body, Ping& m);
bool decode(std::string_view body, IndirectPing& m);
bool decode(std::string_view body, Ack& m);
bool decode(std::string_view body, Nack& m);
bool decode(std::string_view body, Suspect& m);  // suspect and dead
bool decode(std::string_view body, Alive& m);
bool decode(std::string_view body, ErrResp& m);
bool decode(std::string_view body, Compress& m);

// Push-pull body. Returns how many bytes it used, 0 when malformed; sets `truncated` when it
// ran out of bytes (a stream reader then reads more). Caps: max_nodes entries, max_user_state.
std::size_t decode_push_pull(std::string_view body, PushPull& m, bool& truncated,
                             std::size_t max_nodes = 1u << 20,
                             std::size_t max_user_state = 20u << 20);
// Stream user message body ([msgpack{UserMsgLen}][payload]).
bool decode_user_stream(std::string_view body, std::string& payload);

// --- framing ---------------------------------------------------------------------------------
constexpr std::size_t kCompoundHeaderOverhead = 2;  // type + count
constexpr std::size_t kCompoundPartOverhead = 2;    // uint16 length per part
constexpr std::size_t kMaxCompoundParts = 255;

// One compound message [7][n][len...][parts...]; parts beyond 255 are not allowed here (the
// caller splits; make_compounds does).
std::string make_compound(const std::vector<std::string>& parts);
std::vector<std::string> make_compounds(const std::vector<std::string>& parts);
// `body` follows the type byte. Returns false when the header is malformed; parts that do not
// fit are counted in `truncated` (memberlist processes the rest).
bool split_compound(std::string_view body, std::vector<std::string_view>& parts,
                    std::size_t& truncated);

std::uint32_t crc32_ieee(std::string_view data);
std::string add_crc(std::string_view msg);  // [12][crc BE][msg]
// `body` follows the has_crc byte; on success `msg` is the checked message.
bool check_crc(std::string_view body, std::string_view& msg);

// [244][len][label] prefix; empty label adds nothing. Label must be <= 255 bytes.
std::string add_label(std::string_view label, std::string_view msg);
// Splits an optional label prefix. Returns false on a malformed prefix.
bool strip_label(std::string_view in, std::string& label, std::string_view& rest);

// Folds an IPv4-mapped IPv6 address (16 bytes) to 4 bytes.
std::string normalize_ip(std::string_view ip);

}  // namespace brokerha::membership
