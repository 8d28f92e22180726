// SPDX-License-Identifier: Apache-2.0
#include "membership/crypto.hpp"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <algorithm>
#include <memory>

namespace brokerha::membership {
namespace {

constexpr std::size_t kNonce = 12;
constexpr std::size_t kTag = 16;

const EVP_CIPHER* cipher_for(std::size_t key_size) {
  switch (key_size) {
    case 16:
      return EVP_aes_128_gcm();
    case 24:
      return EVP_aes_192_gcm();
    case 32:
      return EVP_aes_256_gcm();
    default:
      return nullptr;
  }
}

struct CtxFree {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};
using Ctx = std::unique_ptr<EVP_CIPHER_CTX, CtxFree>;

const unsigned char* u8(std::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

}  // namespace

std::string gcm_encrypt(int version, std::string_view key, std::string_view nonce,
                        std::string_view plain, std::string_view aad) {
  const EVP_CIPHER* cipher = cipher_for(key.size());
  if (cipher == nullptr || nonce.size() != kNonce) return {};
  std::string padded;
  if (version == 0) {  // PKCS#7 to the AES block size
    const std::size_t pad = 16 - plain.size() % 16;
    padded.assign(plain);
    padded.append(pad, static_cast<char>(pad));
    plain = padded;
  }
  Ctx ctx(EVP_CIPHER_CTX_new());
  std::string out;
  out.push_back(static_cast<char>(version));
  out.append(nonce);
  const std::size_t head = out.size();
  out.resize(head + plain.size() + kTag);
  auto* dst = reinterpret_cast<unsigned char*>(out.data()) + head;
  int len = 0;
  int total = 0;
  if (!ctx || EVP_EncryptInit_ex(ctx.get(), cipher, nullptr, u8(key), u8(nonce)) != 1) return {};
  if (!aad.empty() &&
      EVP_EncryptUpdate(ctx.get(), nullptr, &len, u8(aad), static_cast<int>(aad.size())) != 1) {
    return {};
  }
  if (EVP_EncryptUpdate(ctx.get(), dst, &len, u8(plain), static_cast<int>(plain.size())) != 1) {
    return {};
  }
  total = len;
  if (EVP_EncryptFinal_ex(ctx.get(), dst + total, &len) != 1) return {};
  total += len;
  if (EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, static_cast<int>(kTag), dst + total) !=
      1) {
    return {};
  }
  return out;
}

bool gcm_decrypt(std::string_view key, std::string_view blob, std::string_view aad,
                 std::string& plain) {
  const EVP_CIPHER* cipher = cipher_for(key.size());
  if (cipher == nullptr || blob.size() < 1 + kNonce + kTag) return false;
  const auto version = static_cast<std::uint8_t>(blob[0]);
  if (version > 1) return false;
  const std::string_view nonce = blob.substr(1, kNonce);
  const std::string_view ct = blob.substr(1 + kNonce, blob.size() - 1 - kNonce - kTag);
  std::string tag(blob.substr(blob.size() - kTag));
  Ctx ctx(EVP_CIPHER_CTX_new());
  if (!ctx || EVP_DecryptInit_ex(ctx.get(), cipher, nullptr, u8(key), u8(nonce)) != 1) {
    return false;
  }
  int len = 0;
  if (!aad.empty() &&
      EVP_DecryptUpdate(ctx.get(), nullptr, &len, u8(aad), static_cast<int>(aad.size())) != 1) {
    return false;
  }
  plain.resize(ct.size());
  auto* dst = reinterpret_cast<unsigned char*>(plain.data());
  if (!ct.empty() &&
      EVP_DecryptUpdate(ctx.get(), dst, &len, u8(ct), static_cast<int>(ct.size())) != 1) {
    return false;
  }
  if (EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, static_cast<int>(kTag), tag.data()) !=
      1) {
    return false;
  }
  int fin = 0;
  if (EVP_DecryptFinal_ex(ctx.get(), dst + len, &fin) != 1) return false;
  if (version == 0) {  // strip PKCS#7
    if (plain.empty()) return false;
    const auto pad = static_cast<std::uint8_t>(plain.back());
    if (pad == 0 || pad > 16 || pad > plain.size()) return false;
    plain.resize(plain.size() - pad);
  }
  return true;
}

bool Keyring::add_key(std::string_view key) {
  if (!valid_key_size(key.size())) return false;
  if (std::find(keys_.begin(), keys_.end(), key) == keys_.end()) keys_.emplace_back(key);
  return true;
}

bool Keyring::use_key(std::string_view key) {
  auto it = std::find(keys_.begin(), keys_.end(), key);
  if (it == keys_.end()) return false;
  std::rotate(keys_.begin(), it, it + 1);
  return true;
}

bool Keyring::remove_key(std::string_view key) {
  auto it = std::find(keys_.begin(), keys_.end(), key);
  if (it == keys_.end() || it == keys_.begin()) return false;
  keys_.erase(it);
  return true;
}

std::string Keyring::encrypt(std::string_view plain, std::string_view aad) const {
  std::string nonce(kNonce, '\0');
  RAND_bytes(reinterpret_cast<unsigned char*>(nonce.data()), static_cast<int>(kNonce));
  return gcm_encrypt(1, keys_.front(), nonce, plain, aad);
}

bool Keyring::decrypt(std::string_view blob, std::string_view aad, std::string& plain) const {
  for (const auto& k : keys_) {
    if (gcm_decrypt(k, blob, aad, plain)) return true;
  }
  return false;
}

}  // namespace brokerha::membership
