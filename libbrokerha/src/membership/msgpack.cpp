// SPDX-License-Identifier: Apache-2.0
#include "membership/msgpack.hpp"

namespace brokerha::membership::msgpack {

void Writer::be(std::uint64_t v, int n) {
  for (int i = n - 1; i >= 0; --i) out_.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}

// fix | n below 16, else code16 + uint16, else code16 + 1 + uint32 (maps and arrays alike).
void Writer::container(std::uint8_t fix, std::uint8_t code16, std::uint32_t n) {
  if (n < 16) {
    out_.push_back(static_cast<char>(fix | n));
  } else if (n <= 0xFFFF) {
    out_.push_back(static_cast<char>(code16));
    be(n, 2);
  } else {
    out_.push_back(static_cast<char>(code16 + 1));
    be(n, 4);
  }
}

void Writer::map_header(std::uint32_t n) { container(0x80, 0xDE, n); }

void Writer::array_header(std::uint32_t n) { container(0x90, 0xDC, n); }

void Writer::nil() { out_.push_back(static_cast<char>(0xC0)); }

void Writer::boolean(bool v) { out_.push_back(static_cast<char>(v ? 0xC3 : 0xC2)); }

void Writer::uint(std::uint64_t v) {
  if (v <= 0x7F) {
    out_.push_back(static_cast<char>(v));
  } else if (v <= 0xFF) {
    out_.push_back(static_cast<char>(0xCC));
    be(v, 1);
  } else if (v <= 0xFFFF) {
    out_.push_back(static_cast<char>(0xCD));
    be(v, 2);
  } else if (v <= 0xFFFFFFFFu) {
    out_.push_back(static_cast<char>(0xCE));
    be(v, 4);
  } else {
    out_.push_back(static_cast<char>(0xCF));
    be(v, 8);
  }
}

void Writer::sint(std::int64_t v) {
  if (v >= 0) return uint(static_cast<std::uint64_t>(v));
  const auto u = static_cast<std::uint64_t>(v);
  if (v >= -32) {
    out_.push_back(static_cast<char>(u & 0xFF));
  } else if (v >= -128) {
    out_.push_back(static_cast<char>(0xD0));
    be(u, 1);
  } else if (v >= -32768) {
    out_.push_back(static_cast<char>(0xD1));
    be(u, 2);
  } else if (v >= -2147483648LL) {
    out_.push_back(static_cast<char>(0xD2));
    be(u, 4);
  } else {
    out_.push_back(static_cast<char>(0xD3));
    be(u, 8);
  }
}

void Writer::raw(std::string_view v) {
  const std::size_t n = v.size();
  if (n < 32) {
    out_.push_back(static_cast<char>(0xA0 | n));
  } else if (n <= 0xFFFF) {
    out_.push_back(static_cast<char>(0xDA));
    be(n, 2);
  } else {
    out_.push_back(static_cast<char>(0xDB));
    be(n, 4);
  }
  out_.append(v);
}

void Writer::bytes(std::string_view v) {
  if (v.empty()) {
    nil();
  } else {
    raw(v);
  }
}

bool Reader::need(std::size_t n) {
  if (failed_) return false;
  if (remaining() < n) {
    truncated_ = true;
    return fail();
  }
  return true;
}

bool Reader::byte(std::uint8_t& b) {
  if (!need(1)) return false;
  b = *p_++;
  return true;
}

bool Reader::be(int n, std::uint64_t& v) {
  if (!need(static_cast<std::size_t>(n))) return false;
  v = 0;
  for (int i = 0; i < n; ++i) v = (v << 8) | *p_++;
  return true;
}

bool Reader::container(std::uint8_t fix, std::uint8_t code16, std::uint32_t& n) {
  std::uint8_t b = 0;
  if (!byte(b)) return false;
  std::uint64_t v = 0;
  if ((b & 0xF0) == fix) {
    n = b & 0x0Fu;
    return true;
  }
  if (b == code16 && be(2, v)) {
    n = static_cast<std::uint32_t>(v);
    return true;
  }
  if (b == code16 + 1 && be(4, v)) {
    n = static_cast<std::uint32_t>(v);
    return true;
  }
  return fail();
}

bool Reader::map_header(std::uint32_t& n) { return container(0x80, 0xDE, n); }

bool Reader::array_header(std::uint32_t& n) { return container(0x90, 0xDC, n); }

bool Reader::boolean(bool& v) {
  std::uint8_t b = 0;
  if (!byte(b)) return false;
  if (b == 0xC2 || b == 0xC3) {
    v = b == 0xC3;
    return true;
  }
  return fail();
}

bool Reader::sint(std::int64_t& v) {
  std::uint8_t b = 0;
  if (!byte(b)) return false;
  std::uint64_t u = 0;
  if (b <= 0x7F) {
    v = b;
    return true;
  }
  if (b >= 0xE0) {
    v = static_cast<std::int8_t>(b);
    return true;
  }
  switch (b) {
    case 0xCC:
    case 0xCD:
    case 0xCE:
    case 0xCF: {
      if (!be(1 << (b - 0xCC), u)) return false;
      if (u > static_cast<std::uint64_t>(INT64_MAX)) return fail();
      v = static_cast<std::int64_t>(u);
      return true;
    }
    case 0xD0:
      if (!be(1, u)) return false;
      v = static_cast<std::int8_t>(u);
      return true;
    case 0xD1:
      if (!be(2, u)) return false;
      v = static_cast<std::int16_t>(u);
      return true;
    case 0xD2:
      if (!be(4, u)) return false;
      v = static_cast<std::int32_t>(u);
      return true;
    case 0xD3:
      if (!be(8, u)) return false;
      v = static_cast<std::int64_t>(u);
      return true;
    default:
      return fail();
  }
}

bool Reader::uint(std::uint64_t& v) {
  std::uint8_t b = 0;
  if (failed_ || !need(1)) return false;
  b = *p_;
  if (b >= 0xCC && b <= 0xCF) {
    ++p_;
    return be(1 << (b - 0xCC), v);
  }
  std::int64_t s = 0;
  if (!sint(s)) return false;
  if (s < 0) return fail();
  v = static_cast<std::uint64_t>(s);
  return true;
}

bool Reader::raw(std::string& v, std::size_t max) {
  std::uint8_t b = 0;
  if (!byte(b)) return false;
  std::uint64_t n = 0;
  if ((b & 0xE0) == 0xA0) {
    n = b & 0x1Fu;
  } else if (b == 0xC0) {
    v.clear();
    return true;
  } else if (b == 0xD9 || b == 0xC4) {
    if (!be(1, n)) return false;
  } else if (b == 0xDA || b == 0xC5) {
    if (!be(2, n)) return false;
  } else if (b == 0xDB || b == 0xC6) {
    if (!be(4, n)) return false;
  } else {
    return fail();
  }
  if (n > max) return fail();
  if (!need(static_cast<std::size_t>(n))) return false;
  v.assign(reinterpret_cast<const char*>(p_), static_cast<std::size_t>(n));
  p_ += n;
  return true;
}

bool Reader::skip() { return skip_depth(0); }

bool Reader::skip_depth(int depth) {
  if (depth > kMaxDepth) return fail();
  std::uint8_t b = 0;
  if (failed_ || !need(1)) return false;
  b = *p_;
  std::uint64_t n = 0;
  auto skip_bytes = [&](std::uint64_t count) {
    if (!need(static_cast<std::size_t>(count)) || count > remaining()) return false;
    p_ += count;
    return true;
  };
  auto skip_items = [&](std::uint64_t count) {
    for (std::uint64_t i = 0; i < count; ++i) {
      if (!skip_depth(depth + 1)) return false;
    }
    return true;
  };
  if (b <= 0x7F || b >= 0xE0 || b == 0xC0 || b == 0xC2 || b == 0xC3) {
    ++p_;
    return true;
  }
  if ((b & 0xE0) == 0xA0) {
    ++p_;
    return skip_bytes(b & 0x1Fu);
  }
  if ((b & 0xF0) == 0x80) {
    ++p_;
    return skip_items(2u * (b & 0x0Fu));
  }
  if ((b & 0xF0) == 0x90) {
    ++p_;
    return skip_items(b & 0x0Fu);
  }
  ++p_;
  switch (b) {
    case 0xCC:
    case 0xD0:
      return skip_bytes(1);
    case 0xCD:
    case 0xD1:
      return skip_bytes(2);
    case 0xCE:
    case 0xD2:
    case 0xCA:
      return skip_bytes(4);
    case 0xCF:
    case 0xD3:
    case 0xCB:
      return skip_bytes(8);
    case 0xD4:
      return skip_bytes(2);
    case 0xD5:
      return skip_bytes(3);
    case 0xD6:
      return skip_bytes(5);
    case 0xD7:
      return skip_bytes(9);
    case 0xD8:
      return skip_bytes(17);
    case 0xC4:
    case 0xD9:
      return be(1, n) && skip_bytes(n);
    case 0xC5:
    case 0xDA:
      return be(2, n) && skip_bytes(n);
    case 0xC6:
    case 0xDB:
      return be(4, n) && skip_bytes(n);
    case 0xC7:
      return be(1, n) && skip_bytes(n + 1);
    case 0xC8:
      return be(2, n) && skip_bytes(n + 1);
    case 0xC9:
      return be(4, n) && skip_bytes(n + 1);
    case 0xDC:
      return be(2, n) && skip_items(n);
    case 0xDD:
      return be(4, n) && skip_items(n);
    case 0xDE:
      return be(2, n) && skip_items(2 * n);
    case 0xDF:
      return be(4, n) && skip_items(2 * n);
    default:
      return fail();
  }
}

}  // namespace brokerha::membership::msgpack
