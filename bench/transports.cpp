// SPDX-License-Identifier: Apache-2.0
// brokerha-bench's client transports (transports.hpp): name resolution, the client TLS context,
// and Conn's members that connect (TCP, then the TLS handshake and/or the WebSocket upgrade,
// then CONNECT) and that read and write a wrapped connection: TLS records through
// asio::ssl::stream, WebSocket frames unwrapped into the MQTT framer (ping answered with pong)
// and each flush sent as one masked binary frame. Runs on the bench's one thread.

#include "transports.hpp"

#include <openssl/sha.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "client.hpp"
#include "clock.hpp"
#include "engine.hpp"
#include "util/base64.hpp"

namespace brokerha::bench {
namespace {

// Read buffer of each TLS / WebSocket connection (its reads are asynchronous, so they cannot
// share the plain connections' buffer; TLS has its own record buffers below it).
constexpr std::size_t kWrappedReadBuffer = 4 * 1024;

// base64 (RFC 4648): the library's.
std::string base64(const unsigned char* data, std::size_t n) {
  return brokerha::util::base64_encode(std::string_view(reinterpret_cast<const char*>(data), n));
}

std::string websocket_accept(const std::string& key) {
  const std::string text = key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest);
  return base64(digest, sizeof digest);
}

// Case-insensitive value of `name` in an HTTP response head ("" when absent).
std::string header_value(const std::string& head, const std::string& name) {
  std::size_t at = head.find("\r\n");
  while (at != std::string::npos && at + 2 < head.size()) {
    const std::size_t start = at + 2;
    const std::size_t end = head.find("\r\n", start);
    const std::string line = head.substr(start, end == std::string::npos ? end : end - start);
    const std::size_t colon = line.find(':');
    if (colon == name.size() &&
        std::equal(name.begin(), name.end(), line.begin(), [](char a, char b) {
          return std::tolower(static_cast<unsigned char>(a)) ==
                 std::tolower(static_cast<unsigned char>(b));
        })) {
      const std::size_t v = line.find_first_not_of(" \t", colon + 1);
      return v == std::string::npos ? std::string() : line.substr(v);
    }
    at = end;
  }
  return {};
}

// A WebSocket frame header from the client: FIN + opcode, the mask bit and the length, then the
// masking key.
void append_ws_header(std::string& out, std::uint8_t opcode, std::size_t len, std::uint32_t key) {
  out += static_cast<char>(0x80 | opcode);
  if (len < 126) {
    out += static_cast<char>(0x80 | len);
  } else if (len <= 0xFFFF) {
    out += static_cast<char>(0x80 | 126);
    out += static_cast<char>(len >> 8);
    out += static_cast<char>(len & 0xFF);
  } else {
    out += static_cast<char>(0x80 | 127);
    for (int shift = 56; shift >= 0; shift -= 8) {
      out += static_cast<char>((static_cast<std::uint64_t>(len) >> shift) & 0xFF);
    }
  }
  out.append(reinterpret_cast<const char*>(&key), 4);
}

// Appends one masked frame with `payload` (RFC 6455 5.3).
void append_ws_frame(std::string& out, std::uint8_t opcode, std::string_view payload,
                     std::uint32_t key) {
  append_ws_header(out, opcode, payload.size(), key);
  unsigned char mask[4];
  std::memcpy(mask, &key, 4);
  const std::size_t at = out.size();
  out.append(payload);
  char* p = &out[at];
  for (std::size_t i = 0; i < payload.size(); ++i) p[i] = static_cast<char>(p[i] ^ mask[i & 3]);
}

}  // namespace

tcp::endpoint resolve(asio::io_context& io, const std::string& host, std::uint16_t port) {
  tcp::resolver resolver(io);
  std::error_code ec;
  const auto results = resolver.resolve(host, std::to_string(port), ec);
  if (ec || results.empty()) {
    std::fprintf(stderr, "brokerha-bench: cannot resolve %s: %s\n", host.c_str(),
                 ec ? ec.message().c_str() : "no address");
    std::exit(3);
  }
  return results.begin()->endpoint();
}

std::unique_ptr<asio::ssl::context> make_tls_context(const Options& o) {
  auto ctx = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
  SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION);
  std::error_code ec;
  const char* what = "";
  if (o.tls_insecure) {
    ctx->set_verify_mode(asio::ssl::verify_none);
  } else {
    ctx->set_verify_mode(asio::ssl::verify_peer);
    if (o.tls_ca.empty()) {
      what = "the default CA paths";
      ctx->set_default_verify_paths(ec);
    } else {
      what = "--cafile";
      ctx->load_verify_file(o.tls_ca, ec);
    }
  }
  if (!ec && !o.tls_cert.empty()) {
    what = "--cert";
    ctx->use_certificate_chain_file(o.tls_cert, ec);
    if (!ec) {
      what = "--key";
      ctx->use_private_key_file(o.tls_key, asio::ssl::context::pem, ec);
    }
  }
  if (ec) {
    std::fprintf(stderr, "brokerha-bench: TLS: %s: %s\n", what, ec.message().c_str());
    return nullptr;
  }
  return ctx;
}

void Conn::start() {
  state_ = ConnState::connecting;
  socket_.async_connect(endpoint_, [this](const std::error_code& ec) {
    if (state_ != ConnState::connecting) return;  // closed meanwhile
    if (ec) {
      fail("connect to " + endpoint_.address().to_string() + ":" +
           std::to_string(endpoint_.port()) + ": " + ec.message());
      return;
    }
    on_connected();
  });
}

void Conn::on_connected() {
  std::error_code ec;
  socket_.set_option(tcp::no_delay(true), ec);
  if (!ec) socket_.non_blocking(true, ec);
  if (ec) {
    fail("socket options: " + ec.message());
    return;
  }
  if (!wrap_) {
    send_connect();
    return;
  }
  if (!wrap_->tls) {
    start_websocket();
    return;
  }
  SSL* ssl = wrap_->tls->native_handle();
  asio::error_code addr_ec;
  asio::ip::make_address(host(), addr_ec);
  if (addr_ec) SSL_set_tlsext_host_name(ssl, host().c_str());  // SNI for names, not addresses
  if (!eng_.opt.tls_insecure) {
    wrap_->tls->set_verify_callback(asio::ssl::host_name_verification(host()));
  }
  wrap_->tls->async_handshake(asio::ssl::stream_base::client, [this](const std::error_code& e) {
    if (state_ == ConnState::closed) return;
    if (e) {
      fail("TLS handshake with " + host() + ": " + e.message());
      return;
    }
    if (wrap_->ws) {
      start_websocket();
    } else {
      send_connect();
    }
  });
}

void Conn::start_websocket() {
  unsigned char nonce[16];
  for (std::size_t i = 0; i < sizeof nonce; i += 4) {
    const std::uint32_t m = eng_.next_mask();
    std::memcpy(nonce + i, &m, 4);
  }
  wrap_->ws_key = base64(nonce, sizeof nonce);
  const std::uint16_t port = endpoint_.port();
  wrap_->handshake =
      "GET " + eng_.opt.ws_path + " HTTP/1.1\r\nHost: " + host() + ":" + std::to_string(port) +
      "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + wrap_->ws_key +
      "\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n";
  with_stream([this](auto& stream) {
    asio::async_write(stream, asio::buffer(wrap_->handshake),
                      [this](const std::error_code& ec, std::size_t) {
                        if (state_ == ConnState::closed) return;
                        std::string().swap(wrap_->handshake);
                        if (ec) {
                          fail("WebSocket upgrade: " + ec.message());
                          return;
                        }
                        wrap_->buf.resize(kWrappedReadBuffer);
                        read_upgrade_answer();
                      });
  });
}

void Conn::read_upgrade_answer() {
  with_stream([this](auto& stream) {
    stream.async_read_some(
        asio::buffer(wrap_->buf), [this](const std::error_code& ec, std::size_t n) {
          if (state_ == ConnState::closed) return;
          if (ec) {
            fail("WebSocket upgrade: " +
                 (ec == asio::error::eof ? std::string("connection closed") : ec.message()));
            return;
          }
          std::string& in = wrap_->ws_in;
          in.append(wrap_->buf.data(), n);
          const std::size_t end = in.find("\r\n\r\n");
          if (end == std::string::npos) {
            if (in.size() > 16 * 1024) {
              fail("WebSocket upgrade: answer head too long");
            } else {
              read_upgrade_answer();
            }
            return;
          }
          const std::string head = in.substr(0, end + 2);
          in.erase(0, end + 4);  // frames may follow the head
          if (head.rfind("HTTP/1.1 101", 0) != 0) {
            fail("WebSocket upgrade refused: " + head.substr(0, head.find("\r\n")));
            return;
          }
          if (header_value(head, "Sec-WebSocket-Accept") != websocket_accept(wrap_->ws_key)) {
            fail("WebSocket upgrade: wrong Sec-WebSocket-Accept");
            return;
          }
          std::string().swap(wrap_->ws_key);
          send_connect();
        });
  });
}

void Conn::read_failed(const std::error_code& ec) {
  if (state_ == ConnState::closing) {
    close_now();
    return;
  }
  fail(ec == asio::error::eof || ec == asio::ssl::error::stream_truncated
           ? std::string("connection closed by the broker")
           : "read: " + ec.message());
}

void Conn::read_wrapped() {
  if (wrap_->reading || state_ == ConnState::closed) return;
  if (wrap_->buf.empty()) wrap_->buf.resize(kWrappedReadBuffer);
  // Frames that came with the upgrade answer.
  if (wrap_->ws && !wrap_->ws_in.empty() && !on_wrapped_bytes(0)) return;
  wrap_->reading = true;
  with_stream([this](auto& stream) {
    stream.async_read_some(asio::buffer(wrap_->buf),
                           [this](const std::error_code& ec, std::size_t n) {
                             wrap_->reading = false;
                             if (state_ == ConnState::closed) return;
                             if (ec) {
                               if (ec != asio::error::operation_aborted) read_failed(ec);
                               return;
                             }
                             read_ns_ = now_ns();
                             if (!on_wrapped_bytes(n)) return;
                             after_read();
                             read_wrapped();
                           });
  });
}

// `n` new bytes in wrap_->buf: MQTT bytes (TLS), or WebSocket frames carrying them.
bool Conn::on_wrapped_bytes(std::size_t n) {
  if (!wrap_->ws) return feed_mqtt(std::string_view(wrap_->buf.data(), n));
  std::string& in = wrap_->ws_in;
  in.append(wrap_->buf.data(), n);
  std::size_t pos = 0;
  bool alive = true;
  while (alive && in.size() - pos >= 2) {
    const auto b0 = static_cast<std::uint8_t>(in[pos]);
    const auto b1 = static_cast<std::uint8_t>(in[pos + 1]);
    std::size_t head = 2;
    std::uint64_t len = b1 & 0x7Fu;
    if (len == 126) head += 2;
    if (len == 127) head += 8;
    if (in.size() - pos < head) break;
    if (len >= 126) {
      len = 0;
      for (std::size_t i = pos + 2; i < pos + head; ++i) {
        len = (len << 8) | static_cast<std::uint8_t>(in[i]);
      }
    }
    if ((b1 & 0x80u) != 0) {
      fail("masked WebSocket frame from the broker");
      return false;
    }
    if (len > (64u << 20)) {
      fail("WebSocket frame of " + std::to_string(len) + " bytes from the broker");
      return false;
    }
    if (in.size() - pos - head < len) break;  // the rest of the frame has not arrived
    const std::string_view payload(in.data() + pos + head, static_cast<std::size_t>(len));
    pos += head + static_cast<std::size_t>(len);
    switch (b0 & 0x0Fu) {
      case 0x0:
      case 0x2:
        alive = payload.empty() || feed_mqtt(payload);
        break;
      case 0x8: {
        const unsigned code =
            payload.size() >= 2
                ? (static_cast<unsigned>(static_cast<std::uint8_t>(payload[0])) << 8) |
                      static_cast<std::uint8_t>(payload[1])
                : 0;
        if (state_ == ConnState::closing) {
          close_now();
        } else {
          fail("WebSocket close from the broker (code " + std::to_string(code) + ")");
        }
        return false;
      }
      case 0x9:
        append_ws_frame(wrap_->ws_control, 0xA, payload, eng_.next_mask());
        break;
      case 0xA:
        break;
      default:
        fail("unexpected WebSocket opcode " + std::to_string(b0 & 0x0Fu) + " from the broker");
        return false;
    }
  }
  if (!alive) return false;
  in.erase(0, pos);
  if (in.empty() && in.capacity() > kWrappedReadBuffer) std::string().swap(in);
  return true;
}

// One write per flush: TLS encrypts the queued bytes, WebSocket sends them as one binary frame
// after any pong.
void Conn::flush_wrapped() {
  if (write_active_ || state_ == ConnState::closed) return;
  if (pending_.empty() && wrap_->ws_control.empty()) return;
  writing_.clear();
  if (wrap_->ws) {
    writing_.swap(wrap_->ws_control);
    if (!pending_.empty()) append_ws_frame(writing_, 0x2, pending_, eng_.next_mask());
    pending_.clear();
  } else {
    writing_.swap(pending_);
    pending_.clear();
  }
  write_active_ = true;
  last_write_ns_ = now_ns();
  with_stream([this](auto& stream) {
    asio::async_write(stream, asio::buffer(writing_),
                      [this](const std::error_code& ec, std::size_t) { write_completed(ec); });
  });
}

}  // namespace brokerha::bench
