// SPDX-License-Identifier: Apache-2.0
#include "net/transport.hpp"

#include <openssl/err.h>
#include <openssl/sha.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "mqtt/utf8.hpp"
#include "util/base64.hpp"

namespace brokerha::net {

namespace {

// The largest PROXY header accepted: v1 is at most 107 bytes; v2 is 16 bytes plus addresses
// and TLVs, which load balancers keep small.
constexpr std::size_t kMaxProxyV1 = 107;
constexpr std::size_t kMaxProxyV2 = 16 + 1024;
constexpr char kProxyV2Sig[12] = {'\r', '\n', '\r', '\n', '\0', '\r',
                                  '\n', 'Q',  'U',  'I',  'T',  '\n'};
// The largest WebSocket upgrade request accepted.
constexpr std::size_t kMaxRequest = 8 * 1024;

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// True when the comma-separated list `list` has `token` (case-insensitive).
bool has_token(std::string_view list, std::string_view token) {
  while (!list.empty()) {
    const std::size_t comma = list.find(',');
    if (iequals(trim(list.substr(0, comma)), token)) return true;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return false;
}

std::string websocket_accept(std::string_view key) {
  std::string in(key);
  in += "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(in.data()), in.size(), digest);
  return util::base64_encode(
      std::string_view(reinterpret_cast<const char*>(digest), SHA_DIGEST_LENGTH));
}

std::string http_error(const char* status) {
  return std::string("HTTP/1.1 ") + status +
         "\r\nConnection: close\r\nContent-Length: 0\r\nSec-WebSocket-Version: 13\r\n\r\n";
}

// A WebSocket frame header (server frames are not masked).
std::string frame_header(std::uint8_t opcode, std::uint64_t len) {
  std::string h;
  h.push_back(static_cast<char>(0x80 | opcode));
  if (len < 126) {
    h.push_back(static_cast<char>(len));
  } else if (len <= 0xFFFF) {
    h.push_back(static_cast<char>(126));
    h.push_back(static_cast<char>((len >> 8) & 0xFF));
    h.push_back(static_cast<char>(len & 0xFF));
  } else {
    h.push_back(static_cast<char>(127));
    for (int shift = 56; shift >= 0; shift -= 8) {
      h.push_back(static_cast<char>((len >> shift) & 0xFF));
    }
  }
  return h;
}

std::string close_frame(std::uint16_t code) {
  std::string f = frame_header(0x8, 2);
  f.push_back(static_cast<char>(code >> 8));
  f.push_back(static_cast<char>(code & 0xFF));
  return f;
}

// A header (PROXY, HTTP request) was collected in `collected` and ends `consumed_here` bytes into
// this read: the bytes after it go on to the next layer (earlier reads held header bytes
// alone), and the collected copy is freed.
void skip_header(char*& data, std::size_t& n, std::size_t consumed_here, std::string& collected) {
  data += consumed_here;
  n -= consumed_here;
  std::string().swap(collected);
}

// Close codes a peer may send (RFC 6455 7.4).
bool valid_close_code(std::uint16_t c) {
  return (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) || (c >= 3000 && c <= 4999);
}

}  // namespace

SslContextPtr make_tls_context(const ListenerOptions& l) {
  ERR_clear_error();
  SslContextPtr ctx(SSL_CTX_new(TLS_server_method()), SSL_CTX_free);
  auto fail = [](const std::string& what) {
    throw std::runtime_error(what + ": " + io::openssl_error());
  };
  if (!ctx) fail("TLS context");
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  // Small idle connections: OpenSSL frees its record buffers while nothing is in flight.
  SSL_CTX_set_mode(ctx.get(), SSL_MODE_RELEASE_BUFFERS);
  // No TLS 1.3 session tickets: they would be written right after the handshake, while the
  // connection may be moving to its session's shard; MQTT clients rarely resume anyway.
  SSL_CTX_set_num_tickets(ctx.get(), 0);
  SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_OFF);
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), l.tls_cert.c_str()) != 1) {
    fail("certificate " + l.tls_cert);
  }
  if (SSL_CTX_use_PrivateKey_file(ctx.get(), l.tls_key.c_str(), SSL_FILETYPE_PEM) != 1) {
    fail("private key " + l.tls_key);
  }
  if (SSL_CTX_check_private_key(ctx.get()) != 1) fail("private key " + l.tls_key);
  if (!l.tls_ca.empty()) {
    if (SSL_CTX_load_verify_locations(ctx.get(), l.tls_ca.c_str(), nullptr) != 1) {
      fail("CA file " + l.tls_ca);
    }
    if (STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(l.tls_ca.c_str())) {
      SSL_CTX_set_client_CA_list(ctx.get(), names);
    }
    SSL_CTX_set_verify(
        ctx.get(), SSL_VERIFY_PEER | (l.require_client_cert ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
        nullptr);
  }
  return ctx;
}

Transport::Transport(const ListenerState& listener, std::uint32_t max_frame)
    : max_frame_(max_frame) {
  const ListenerOptions& o = listener.options;
  proxy_pending_ = o.proxy_protocol;
  ws_ = o.type == ListenerType::ws || o.type == ListenerType::wss;
  if (ws_) ws_path_ = o.path;
  if (o.type == ListenerType::tls || o.type == ListenerType::wss) {
    use_identity_ = o.use_identity_as_username;
    if (SslContextPtr ctx = listener.tls()) tls_.start(ctx.get(), io::TlsEngine::Role::server);
    broken_ = !tls_.active();  // out of memory, or no context: refuse the client
  }
}

Transport::~Transport() = default;

// ---- input -----------------------------------------------------------------------------------

Transport::Result Transport::input(char* scratch, std::size_t capacity, std::size_t n,
                                   const Deliver& deliver) {
  if (broken_) return Result::error;
  char* data = scratch;
  if (proxy_pending_) {
    const Result r = proxy_input(data, n);
    if (r != Result::ok || proxy_pending_) return r;
  }
  return after_proxy(scratch, capacity, data, n, deliver);
}

Transport::Result Transport::after_proxy(char* scratch, std::size_t capacity, char* data,
                                         std::size_t n, const Deliver& deliver) {
  if (!tls_.active()) return after_tls(data, n, deliver);
  if (!tls_.feed(data, n)) return Result::error;
  while (true) {
    if (!tls_.handshake_done()) {
      const io::TlsEngine::Status h = tls_.handshake();
      tls_.drain(out_);
      if (h == io::TlsEngine::Status::want) return Result::ok;
      if (h != io::TlsEngine::Status::ok) return tls_error();
      identity_ = tls_.verified_peer_common_name();
    }
    // Plaintext goes to the scratch buffer: its ciphertext has been copied into the BIO.
    std::size_t got = 0;
    const io::TlsEngine::Status r =
        tls_.read(scratch, std::min<std::size_t>(capacity, 1 << 30), got);
    tls_.drain(out_);
    switch (r) {
      case io::TlsEngine::Status::ok: {
        const Result s = after_tls(scratch, got, deliver);
        if (s != Result::ok) return s;
        continue;
      }
      case io::TlsEngine::Status::want:
        return Result::ok;
      case io::TlsEngine::Status::closed:  // close_notify from the client
        close_pending_ = true;
        return Result::closing;
      case io::TlsEngine::Status::failed:
        break;
    }
    return tls_error();
  }
}

Transport::Result Transport::tls_error() {
  // The alert OpenSSL queued (if any) goes out before the socket closes.
  close_sent_ = true;  // no close_notify after a fatal alert
  return out_.empty() ? Result::error : Result::closing;
}

void Transport::emit(std::string_view bytes) {
  if (!tls_.active()) {
    out_.append(bytes);
    return;
  }
  tls_.write(bytes);
  tls_.drain(out_);
}

Transport::Result Transport::after_tls(char* data, std::size_t n, const Deliver& deliver) {
  if (!ws_) {
    if (n == 0) return Result::ok;
    return deliver(std::string_view(data, n)) ? Result::ok : Result::stop;
  }
  if (!ws_open_) {
    const Result r = ws_handshake(data, n);
    if (r != Result::ok || !ws_open_) return r;
  }
  return ws_frames(data, n, deliver);
}

// ---- PROXY protocol --------------------------------------------------------------------------

Transport::Result Transport::proxy_input(char*& data, std::size_t& n) {
  const std::size_t before = proxy_buf_.size();
  proxy_buf_.append(data, n);
  const std::string& b = proxy_buf_;
  std::size_t header_len = 0;
  // Wait for enough bytes to tell the versions apart; refuse anything else at once.
  const std::size_t prefix = std::min<std::size_t>(b.size(), 12);
  const bool v2 = std::memcmp(b.data(), kProxyV2Sig, prefix) == 0;
  const bool v1 = std::memcmp(b.data(), "PROXY ", std::min<std::size_t>(prefix, 6)) == 0;
  if (!v1 && !v2) return Result::error;
  if (v2) {
    if (b.size() < 16) return Result::ok;
    const std::size_t len = (std::size_t{static_cast<std::uint8_t>(b[14])} << 8) |
                            std::size_t{static_cast<std::uint8_t>(b[15])};
    if (16 + len > kMaxProxyV2) return Result::error;
    if (b.size() < 16 + len) return Result::ok;
    header_len = 16 + len;
    const auto ver_cmd = static_cast<std::uint8_t>(b[12]);
    const auto fam = static_cast<std::uint8_t>(b[13]);
    if ((ver_cmd >> 4) != 2) return Result::error;
    const unsigned cmd = ver_cmd & 0x0F;
    if (cmd > 1) return Result::error;
    const auto* a = reinterpret_cast<const unsigned char*>(b.data() + 16);
    if (cmd == 1 && fam == 0x11) {  // PROXY, TCP over IPv4
      if (len < 12) return Result::error;
      asio::ip::address_v4::bytes_type ip;
      std::memcpy(ip.data(), a, 4);
      peer_.emplace(asio::ip::address_v4(ip).to_string(),
                    static_cast<std::uint16_t>((a[8] << 8) | a[9]));
    } else if (cmd == 1 && fam == 0x21) {  // PROXY, TCP over IPv6
      if (len < 36) return Result::error;
      asio::ip::address_v6::bytes_type ip;
      std::memcpy(ip.data(), a, 16);
      const asio::ip::address_v6 v6(ip);
      peer_.emplace(v6.is_v4_mapped()
                        ? asio::ip::make_address_v4(asio::ip::v4_mapped, v6).to_string()
                        : v6.to_string(),
                    static_cast<std::uint16_t>((a[32] << 8) | a[33]));
    }
    // LOCAL (health checks) and other families: the socket's own address stays.
  } else {
    const std::size_t end = b.find("\r\n");
    if (end == std::string::npos) {
      return b.size() >= kMaxProxyV1 ? Result::error : Result::ok;
    }
    if (end + 2 > kMaxProxyV1) return Result::error;
    header_len = end + 2;
    // "PROXY TCP4 src dst sport dport" or "PROXY UNKNOWN ..."
    std::vector<std::string> f;
    std::string_view line(b.data(), end);
    while (!line.empty()) {
      const std::size_t sp = line.find(' ');
      f.emplace_back(line.substr(0, sp));
      if (sp == std::string_view::npos) break;
      line.remove_prefix(sp + 1);
    }
    if (f.size() >= 2 && f[1] == "UNKNOWN") {
      // the socket's own address stays
    } else if (f.size() == 6 && (f[1] == "TCP4" || f[1] == "TCP6")) {
      std::error_code ec;
      const asio::ip::address src = asio::ip::make_address(f[2], ec);
      if (ec || src.is_v4() != (f[1] == "TCP4")) return Result::error;
      asio::ip::make_address(f[3], ec);
      if (ec) return Result::error;
      unsigned long port = 0;
      if (f[4].empty() || f[4].size() > 5 ||
          f[4].find_first_not_of("0123456789") != std::string::npos) {
        return Result::error;
      }
      port = std::stoul(f[4]);
      if (port > 65535) return Result::error;
      peer_.emplace(src.to_string(), static_cast<std::uint16_t>(port));
    } else {
      return Result::error;
    }
  }
  proxy_pending_ = false;
  skip_header(data, n, header_len - before, proxy_buf_);
  return Result::ok;
}

// ---- WebSocket -------------------------------------------------------------------------------

Transport::Result Transport::ws_handshake(char*& data, std::size_t& n) {
  const std::size_t before = request_.size();
  request_.append(data, n);
  const std::size_t end = request_.find("\r\n\r\n");
  if (end == std::string::npos) {
    if (request_.size() > kMaxRequest) {
      emit(http_error("431 Request Header Fields Too Large"));
      close_sent_ = true;
      return Result::closing;
    }
    data += n;
    n = 0;
    return Result::ok;
  }
  const std::size_t header_end = end + 4;
  if (header_end > kMaxRequest) {
    emit(http_error("431 Request Header Fields Too Large"));
    close_sent_ = true;
    return Result::closing;
  }
  std::string_view req(request_.data(), end);
  auto refuse = [this](const char* status) {
    emit(http_error(status));
    close_sent_ = true;
    return Result::closing;
  };
  // Request line: GET <path> HTTP/1.1
  const std::size_t eol = req.find("\r\n");
  const std::string_view line = req.substr(0, eol);
  if (line.substr(0, 4) != "GET ") return refuse("405 Method Not Allowed");
  const std::size_t sp = line.find(' ', 4);
  if (sp == std::string_view::npos || line.substr(sp + 1).substr(0, 7) != "HTTP/1.") {
    return refuse("400 Bad Request");
  }
  std::string_view target = line.substr(4, sp - 4);
  target = target.substr(0, target.find('?'));
  std::string_view upgrade, connection, key, version, protocols;
  std::string_view rest = eol == std::string_view::npos ? std::string_view() : req.substr(eol + 2);
  while (!rest.empty()) {
    const std::size_t e = rest.find("\r\n");
    const std::string_view h = rest.substr(0, e);
    rest = e == std::string_view::npos ? std::string_view() : rest.substr(e + 2);
    const std::size_t colon = h.find(':');
    if (colon == std::string_view::npos) return refuse("400 Bad Request");
    const std::string_view name = trim(h.substr(0, colon));
    const std::string_view value = trim(h.substr(colon + 1));
    if (iequals(name, "Upgrade")) upgrade = value;
    if (iequals(name, "Connection")) connection = value;
    if (iequals(name, "Sec-WebSocket-Key")) key = value;
    if (iequals(name, "Sec-WebSocket-Version")) version = value;
    if (iequals(name, "Sec-WebSocket-Protocol")) protocols = value;
  }
  if (target != ws_path_) return refuse("404 Not Found");
  if (!has_token(upgrade, "websocket") || !has_token(connection, "upgrade") || key.empty()) {
    return refuse("400 Bad Request");
  }
  if (version != "13") return refuse("426 Upgrade Required");
  // The MQTT subprotocol (MQTT 5.0 6.0: "mqtt"; 3.1 clients send "mqttv3.1"). A client that
  // names none is served too (it speaks MQTT on this path), one naming only others is not.
  std::string protocol;
  if (has_token(protocols, "mqtt")) {
    protocol = "mqtt";
  } else if (has_token(protocols, "mqttv3.1")) {
    protocol = "mqttv3.1";
  } else if (!protocols.empty()) {
    return refuse("400 Bad Request");
  }
  std::string answer =
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Accept: " +
      websocket_accept(key) + "\r\n";
  if (!protocol.empty()) answer += "Sec-WebSocket-Protocol: " + protocol + "\r\n";
  answer += "\r\n";
  emit(answer);
  ws_open_ = true;
  skip_header(data, n, header_end - before, request_);
  return Result::ok;
}

Transport::Result Transport::ws_fail(std::uint16_t code) {
  close_code_ = code;
  close_pending_ = true;
  return Result::closing;
}

Transport::Result Transport::ws_frames(char* data, std::size_t n, const Deliver& deliver) {
  while (n > 0) {
    if (close_pending_ || close_sent_) return Result::closing;  // nothing after a close
    if (!in_frame_) {
      // Collect the header: 2 bytes, the extended length, the mask.
      std::size_t need = 2;
      if (header_len_ >= 2) {
        const std::uint8_t len7 = header_[1] & 0x7F;
        need += (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + 4;
      }
      while (header_len_ < need && n > 0) {
        header_[header_len_++] = static_cast<std::uint8_t>(*data++);
        --n;
        if (header_len_ == 2) {
          const std::uint8_t len7 = header_[1] & 0x7F;
          need += (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + 4;
          if ((header_[0] & 0x70) != 0) return ws_fail(1002);  // no extension was agreed
          if ((header_[1] & 0x80) == 0) return ws_fail(1002);  // clients must mask (5.1)
        }
      }
      if (header_len_ < need) return Result::ok;
      const bool fin = (header_[0] & 0x80) != 0;
      const std::uint8_t opcode = header_[0] & 0x0F;
      const std::uint8_t len7 = header_[1] & 0x7F;
      std::uint64_t len = len7;
      std::size_t at = 2;
      if (len7 == 126) {
        len = (std::uint64_t{header_[2]} << 8) | header_[3];
        at = 4;
      } else if (len7 == 127) {
        len = 0;
        for (std::size_t i = 2; i < 10; ++i) len = (len << 8) | header_[i];
        at = 10;
        if ((len >> 63) != 0) return ws_fail(1002);
      }
      std::memcpy(mask_, header_ + at, 4);
      header_len_ = 0;
      if (opcode >= 0x8) {
        if (!fin || len > 125) return ws_fail(1002);
        if (opcode != 0x8 && opcode != 0x9 && opcode != 0xA) return ws_fail(1002);
        control_.clear();
      } else if (opcode == 0x0) {
        if (!in_message_) return ws_fail(1002);  // a continuation of nothing
        in_message_ = !fin;
      } else if (opcode == 0x2) {
        if (in_message_) return ws_fail(1002);  // a new message inside a fragmented one
        in_message_ = !fin;
      } else if (opcode == 0x1) {
        return ws_fail(1003);  // MQTT is carried in binary frames only
      } else {
        return ws_fail(1002);
      }
      if (len > max_frame_) return ws_fail(1009);
      opcode_ = opcode;
      remaining_ = len;
      mask_pos_ = 0;
      in_frame_ = true;
    }
    const std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(remaining_, n));
    for (std::size_t i = 0; i < take; ++i) {
      data[i] = static_cast<char>(data[i] ^ static_cast<char>(mask_[mask_pos_]));
      mask_pos_ = static_cast<std::uint8_t>((mask_pos_ + 1) & 3);
    }
    remaining_ -= take;
    if (opcode_ >= 0x8) {
      control_.append(data, take);
    } else if (take > 0 && !deliver(std::string_view(data, take))) {
      return Result::stop;
    }
    data += take;
    n -= take;
    if (remaining_ == 0) {
      in_frame_ = false;
      if (opcode_ >= 0x8) {
        const Result r = ws_control();
        if (r != Result::ok) return r;
      }
    }
  }
  return Result::ok;
}

Transport::Result Transport::ws_control() {
  switch (opcode_) {
    case 0x9:  // ping -> pong with the same payload, with the next flush (see pong_)
      pong_ = control_;
      pong_pending_ = true;
      return Result::ok;
    case 0xA:  // unsolicited pong: ignored
      return Result::ok;
    default: {  // close
      if (control_.size() == 1) return ws_fail(1002);
      if (control_.size() >= 2) {
        const auto code = static_cast<std::uint16_t>((static_cast<std::uint8_t>(control_[0]) << 8) |
                                                     static_cast<std::uint8_t>(control_[1]));
        if (!valid_close_code(code)) return ws_fail(1002);
        if (!mqtt::is_valid_utf8(std::string_view(control_).substr(2), true)) {
          return ws_fail(1007);
        }
      }
      return ws_fail(1000);  // answer the close handshake, then close
    }
  }
}

// ---- output ----------------------------------------------------------------------------------

void Transport::closing(std::uint16_t ws_code) {
  if (close_sent_) return;
  if ((ws_ && ws_open_) || tls_.handshake_done()) {
    if (close_code_ == 0) close_code_ = ws_code;
    close_pending_ = true;
  }
}

void Transport::wrap(const std::vector<asio::const_buffer>& plain, std::string& own,
                     std::vector<asio::const_buffer>& wire) {
  own.clear();
  wire.clear();
  if (pong_pending_) {
    pong_pending_ = false;
    if (!close_sent_) emit(frame_header(0xA, pong_.size()) + pong_);
    std::string().swap(pong_);
  }
  std::size_t total = 0;
  for (const auto& b : plain) total += b.size();
  if (close_sent_) total = 0;  // nothing may follow a close frame or a fatal alert
  if (!tls_.active()) {
    // Plain WebSocket: queued control bytes and the frame header are own bytes; the MQTT
    // bytes are written from where they are (the shared encodings included).
    own.swap(out_);
    if (ws_ && total > 0) own += frame_header(0x2, total);
    std::string tail;
    if (close_pending_ && !close_sent_) {
      if (ws_ && ws_open_) tail = close_frame(close_code_);
      close_sent_ = true;
    }
    close_pending_ = false;
    const std::size_t head = own.size();
    own += tail;
    if (head > 0) wire.push_back(asio::buffer(own.data(), head));
    if (total > 0) wire.insert(wire.end(), plain.begin(), plain.end());
    if (!tail.empty()) wire.push_back(asio::buffer(own.data() + head, tail.size()));
    return;
  }
  // TLS: the record layer copies anyway; control bytes were encrypted when they were made.
  if (total > 0) {
    if (ws_) tls_.write(frame_header(0x2, total));
    for (const auto& b : plain) {
      tls_.write(std::string_view(static_cast<const char*>(b.data()), b.size()));
    }
  }
  if (close_pending_ && !close_sent_) {
    if (ws_ && ws_open_) tls_.write(close_frame(close_code_));
    tls_.close_notify();
    close_sent_ = true;
  }
  close_pending_ = false;
  tls_.drain(out_);
  own.swap(out_);
  if (!own.empty()) wire.push_back(asio::buffer(own));
}

}  // namespace brokerha::net
