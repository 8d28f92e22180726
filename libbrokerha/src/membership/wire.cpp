// SPDX-License-Identifier: Apache-2.0
#include "membership/wire.hpp"

#include <cstring>
#include <optional>

#include "membership/msgpack.hpp"

namespace brokerha::membership {
namespace {

using msgpack::Reader;
using msgpack::Writer;

constexpr std::size_t kMaxName = 64u << 10;

// Reads a msgpack map, calling field(key, reader) for each entry; field returns false for an
// unknown key (the value is then skipped) and leaves the reader failed on a bad value.
template <typename F>
bool read_map(Reader& r, F&& field) {
  std::uint32_t n = 0;
  if (!r.map_header(n)) return false;
  std::string key;
  for (std::uint32_t i = 0; i < n; ++i) {
    if (!r.raw(key, 256)) return false;
    if (!field(key, r) && r.ok() && !r.skip()) return false;
    if (!r.ok()) return false;
  }
  return true;
}

template <typename F>
bool decode_map(std::string_view body, F&& field) {
  Reader r(body);
  return read_map(r, field);
}

std::string start(MsgType t) { return std::string(1, static_cast<char>(t)); }

void write_suspect_like(MsgType t, const Suspect& m, std::string& out) {
  out = start(t);
  Writer w(out);
  w.map_header(3);
  w.key("From");
  w.raw(m.from);
  w.key("Incarnation");
  w.uint(m.incarnation);
  w.key("Node");
  w.raw(m.node);
}

void write_node_state(Writer& w, const PushNodeState& n) {
  w.map_header(7);
  w.key("Addr");
  w.bytes(n.addr);
  w.key("Incarnation");
  w.uint(n.incarnation);
  w.key("Meta");
  w.bytes(n.meta);
  w.key("Name");
  w.raw(n.name);
  w.key("Port");
  w.uint(n.port);
  w.key("State");
  w.uint(static_cast<std::uint8_t>(n.state));
  w.key("Vsn");
  w.bytes(n.vsn);
}

// The omitempty source fields of ping and indirect ping (keys sort between SeqNo and Target).
template <typename M>
std::uint32_t source_fields(const M& m) {
  return static_cast<std::uint32_t>(!m.source_addr.empty()) +
         static_cast<std::uint32_t>(m.source_port != 0) +
         static_cast<std::uint32_t>(!m.source_node.empty());
}

template <typename M>
void write_source(Writer& w, const M& m) {
  if (!m.source_addr.empty()) {
    w.key("SourceAddr");
    w.raw(m.source_addr);
  }
  if (!m.source_node.empty()) {
    w.key("SourceNode");
    w.raw(m.source_node);
  }
  if (m.source_port != 0) {
    w.key("SourcePort");
    w.uint(m.source_port);
  }
}

// Reads a source field; nullopt when `k` is not one.
template <typename M>
std::optional<bool> read_source(const std::string& k, Reader& r, M& m) {
  if (k == "SourceAddr") return r.raw(m.source_addr, 16);
  if (k == "SourcePort") return r.uint_as(m.source_port);
  if (k == "SourceNode") return r.raw(m.source_node, kMaxName);
  return std::nullopt;
}

void be32(std::string& out, std::uint32_t v) {
  for (int i = 3; i >= 0; --i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}

}  // namespace

std::string encode(const Ping& m) {
  std::string out = start(MsgType::ping);
  Writer w(out);
  w.map_header(2u + source_fields(m));
  w.key("Node");
  w.raw(m.node);
  w.key("SeqNo");
  w.uint(m.seq_no);
  write_source(w, m);
  return out;
}

std::string encode(const IndirectPing& m) {
  std::string out = start(MsgType::indirect_ping);
  Writer w(out);
  w.map_header(5u + source_fields(m));
  w.key("Nack");
  w.boolean(m.nack);
  w.key("Node");
  w.raw(m.node);
  w.key("Port");
  w.uint(m.port);
  w.key("SeqNo");
  w.uint(m.seq_no);
  write_source(w, m);
  w.key("Target");
  w.bytes(m.target);
  return out;
}

std::string encode(const Ack& m) {
  std::string out = start(MsgType::ack);
  Writer w(out);
  w.map_header(2);
  w.key("Payload");
  w.bytes(m.payload);
  w.key("SeqNo");
  w.uint(m.seq_no);
  return out;
}

std::string encode(const Nack& m) {
  std::string out = start(MsgType::nack);
  Writer w(out);
  w.map_header(1);
  w.key("SeqNo");
  w.uint(m.seq_no);
  return out;
}

std::string encode_suspect(const Suspect& m) {
  std::string out;
  write_suspect_like(MsgType::suspect, m, out);
  return out;
}

std::string encode_dead(const Dead& m) {
  std::string out;
  write_suspect_like(MsgType::dead, m, out);
  return out;
}

std::string encode(const Alive& m) {
  std::string out = start(MsgType::alive);
  Writer w(out);
  w.map_header(6);
  w.key("Addr");
  w.bytes(m.addr);
  w.key("Incarnation");
  w.uint(m.incarnation);
  w.key("Meta");
  w.bytes(m.meta);
  w.key("Node");
  w.raw(m.node);
  w.key("Port");
  w.uint(m.port);
  w.key("Vsn");
  w.bytes(m.vsn);
  return out;
}

std::string encode(const PushPull& m) {
  std::string out = start(MsgType::push_pull);
  Writer w(out);
  w.map_header(3);
  w.key("Join");
  w.boolean(m.header.join);
  w.key("Nodes");
  w.sint(static_cast<std::int64_t>(m.nodes.size()));
  w.key("UserStateLen");
  w.sint(static_cast<std::int64_t>(m.user_state.size()));
  for (const auto& n : m.nodes) write_node_state(w, n);
  out.append(m.user_state);
  return out;
}

std::string encode(const ErrResp& m) {
  std::string out = start(MsgType::err);
  Writer w(out);
  w.map_header(1);
  w.key("Error");
  w.raw(m.error);
  return out;
}

std::string encode(const Compress& m) {
  std::string out = start(MsgType::compress);
  Writer w(out);
  w.map_header(2);
  w.key("Algo");
  w.uint(m.algo);
  w.key("Buf");
  w.bytes(m.buf);
  return out;
}

std::string encode_user(std::string_view payload) {
  std::string out = start(MsgType::user);
  out.append(payload);
  return out;
}

std::string encode_user_stream(std::string_view payload) {
  std::string out = start(MsgType::user);
  Writer w(out);
  w.map_header(1);
  w.key("UserMsgLen");
  w.sint(static_cast<std::int64_t>(payload.size()));
  out.append(payload);
  return out;
}

bool decode(std::string_view body, Ping& m) {
  m = {};
  return decode_map(body, [&](const std::string& k, Reader& r) {
    if (k == "SeqNo") return r.uint_as(m.seq_no);
    if (k == "Node") return r.raw(m.node, kMaxName);
    if (auto v = read_source(k, r, m)) return *v;
    return false;
  });
}

bool decode(std::string_view body, IndirectPing& m) {
  m = {};
  return decode_map(body, [&](const std::string& k, Reader& r) {
    if (k == "SeqNo") return r.uint_as(m.seq_no);
    if (k == "Target") return r.raw(m.target, 16);
    if (k == "Port") return r.uint_as(m.port);
    if (k == "Node") return r.raw(m.node, kMaxName);
    if (k == "Nack") return r.boolean(m.nack);
    if (auto v = read_source(k, r, m)) return *v;
    return false;
  });
}

bool decode(std::string_view body, Ack& m) {
  m = {};
  return decode_map(body, [&](const std::string& k, Reader& r) {
    if (k == "SeqNo") return r.uint_as(m.seq_no);
    if (k == "Payload") return r.raw(m.payload);
    return false;
  });
}

bool decode(std::string_view body, Nack& m) {
  m = {};
  return decode_map(body, [&](const std::string& k, Reader& r) {
    if (k == "SeqNo") return r.uint_as(m.seq_no);
    return false;
  });
}

bool decode(std::string_view body, Suspect& m) {
  m = {};
  return decode_map(body, [&](const std::string& k, Reader& r) {
    if (k == "Incarnation") return r.uint_as(m.incarnation);
    if (k == "Node") return r.raw(m.node, kMaxName);
    if (k == "From") return r.raw(m.from, kMaxName);
    return false;
  });
}

bool decode(std::string_view body, Alive& m) {
  m = {};
  return decode_map(body, [&](const std::string& k, Reader& r) {
    if (k == "Incarnation") return r.uint_as(m.incarnation);
    if (k == "Node") return r.raw(m.node, kMaxName);
    if (k == "Addr") return r.raw(m.addr, 16);
    if (k == "Port") return r.uint_as(m.port);
    if (k == "Meta") return r.raw(m.meta, 64u << 10);
    if (k == "Vsn") return r.raw(m.vsn, 64);
    return false;
  });
}

bool decode(std::string_view body, ErrResp& m) {
  m = {};
  return decode_map(body, [&](const std::string& k, Reader& r) {
    if (k == "Error") return r.raw(m.error, 64u << 10);
    return false;
  });
}

bool decode(std::string_view body, Compress& m) {
  m = {};
  return decode_map(body, [&](const std::string& k, Reader& r) {
    if (k == "Algo") return r.uint_as(m.algo);
    if (k == "Buf") return r.raw(m.buf);
    return false;
  });
}

std::size_t decode_push_pull(std::string_view body, PushPull& m, bool& truncated,
                             std::size_t max_nodes, std::size_t max_user_state) {
  m = {};
  truncated = false;
  Reader r(body);
  auto fail = [&]() -> std::size_t {
    truncated = r.truncated();
    return 0;
  };
  const bool header_ok = read_map(r, [&](const std::string& k, Reader& rr) {
    if (k == "Nodes") return rr.sint(m.header.nodes);
    if (k == "UserStateLen") return rr.sint(m.header.user_state_len);
    if (k == "Join") return rr.boolean(m.header.join);
    return false;
  });
  if (!header_ok) return fail();
  if (m.header.nodes < 0 || static_cast<std::uint64_t>(m.header.nodes) > max_nodes ||
      m.header.user_state_len < 0 ||
      static_cast<std::uint64_t>(m.header.user_state_len) > max_user_state) {
    return 0;
  }
  // Each entry is at least a few bytes, so a count that cannot fit is rejected before reserving.
  if (static_cast<std::uint64_t>(m.header.nodes) <= r.remaining()) {
    m.nodes.reserve(static_cast<std::size_t>(m.header.nodes));
  }
  for (std::int64_t i = 0; i < m.header.nodes; ++i) {
    PushNodeState n;
    std::uint8_t state = 0;
    const bool ok = read_map(r, [&](const std::string& k, Reader& rr) {
      if (k == "Name") return rr.raw(n.name, kMaxName);
      if (k == "Addr") return rr.raw(n.addr, 16);
      if (k == "Port") return rr.uint_as(n.port);
      if (k == "Meta") return rr.raw(n.meta, 64u << 10);
      if (k == "Incarnation") return rr.uint_as(n.incarnation);
      if (k == "State") return rr.uint_as(state);
      if (k == "Vsn") return rr.raw(n.vsn, 64);
      return false;
    });
    if (!ok) return fail();
    if (state > 3) return 0;
    n.state = static_cast<NodeState>(state);
    m.nodes.push_back(std::move(n));
  }
  const auto len = static_cast<std::size_t>(m.header.user_state_len);
  if (r.remaining() < len) {
    truncated = true;
    return 0;
  }
  m.user_state.assign(reinterpret_cast<const char*>(r.position()), len);
  return body.size() - r.remaining() + len;
}

bool decode_user_stream(std::string_view body, std::string& payload) {
  Reader r(body);
  std::int64_t len = -1;
  const bool ok = read_map(r, [&](const std::string& k, Reader& rr) {
    if (k == "UserMsgLen") return rr.sint(len);
    return false;
  });
  if (!ok || len < 0 || static_cast<std::uint64_t>(len) > r.remaining()) return false;
  payload.assign(reinterpret_cast<const char*>(r.position()), static_cast<std::size_t>(len));
  return true;
}

std::string make_compound(const std::vector<std::string>& parts) {
  std::string out = start(MsgType::compound);
  out.push_back(static_cast<char>(parts.size() & 0xFF));
  for (const auto& p : parts) {
    out.push_back(static_cast<char>((p.size() >> 8) & 0xFF));
    out.push_back(static_cast<char>(p.size() & 0xFF));
  }
  for (const auto& p : parts) out.append(p);
  return out;
}

std::vector<std::string> make_compounds(const std::vector<std::string>& parts) {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < parts.size(); i += kMaxCompoundParts) {
    const std::size_t end = std::min(parts.size(), i + kMaxCompoundParts);
    out.push_back(make_compound(std::vector<std::string>(parts.begin() + static_cast<long>(i),
                                                         parts.begin() + static_cast<long>(end))));
  }
  return out;
}

bool split_compound(std::string_view body, std::vector<std::string_view>& parts,
                    std::size_t& truncated) {
  parts.clear();
  truncated = 0;
  if (body.empty()) return false;
  const auto n = static_cast<std::uint8_t>(body[0]);
  body.remove_prefix(1);
  if (body.size() < 2u * n) return false;
  std::vector<std::uint16_t> lens(n);
  for (std::size_t i = 0; i < n; ++i) {
    lens[i] = static_cast<std::uint16_t>((static_cast<std::uint8_t>(body[2 * i]) << 8) |
                                         static_cast<std::uint8_t>(body[2 * i + 1]));
  }
  body.remove_prefix(2u * n);
  for (std::size_t i = 0; i < n; ++i) {
    if (body.size() < lens[i]) {
      truncated = n - i;
      break;
    }
    parts.push_back(body.substr(0, lens[i]));
    body.remove_prefix(lens[i]);
  }
  return true;
}

std::uint32_t crc32_ieee(std::string_view data) {
  static const auto table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  std::uint32_t c = 0xFFFFFFFFu;
  for (const char ch : data) c = table[(c ^ static_cast<std::uint8_t>(ch)) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

std::string add_crc(std::string_view msg) {
  std::string out = start(MsgType::has_crc);
  be32(out, crc32_ieee(msg));
  out.append(msg);
  return out;
}

bool check_crc(std::string_view body, std::string_view& msg) {
  if (body.size() < 4) return false;
  std::uint32_t want = 0;
  for (std::size_t i = 0; i < 4; ++i) want = (want << 8) | static_cast<std::uint8_t>(body[i]);
  msg = body.substr(4);
  return crc32_ieee(msg) == want;
}

std::string add_label(std::string_view label, std::string_view msg) {
  if (label.empty()) return std::string(msg);
  std::string out = start(MsgType::has_label);
  out.push_back(static_cast<char>(label.size()));
  out.append(label);
  out.append(msg);
  return out;
}

bool strip_label(std::string_view in, std::string& label, std::string_view& rest) {
  label.clear();
  rest = in;
  if (in.empty() ||
      static_cast<std::uint8_t>(in[0]) != static_cast<std::uint8_t>(MsgType::has_label)) {
    return true;
  }
  if (in.size() < 2) return false;
  const auto n = static_cast<std::uint8_t>(in[1]);
  if (n == 0 || in.size() < 2u + n) return false;
  label.assign(in.substr(2, n));
  rest = in.substr(2u + n);
  return true;
}

std::string normalize_ip(std::string_view ip) {
  static constexpr char kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, '\xff', '\xff'};
  if (ip.size() == 16 && std::memcmp(ip.data(), kMapped, 12) == 0)
    return std::string(ip.substr(12));
  return std::string(ip);
}

}  // namespace brokerha::membership
