// SPDX-License-Identifier: Apache-2.0
#pragma once
// memberlist's AES-GCM keyring (security.go / keyring.go), over OpenSSL EVP.
//
// Blob = [version][12-byte nonce][ciphertext || 16-byte tag]. Version 1 (protocol >= 2) has no
// padding; version 0 pads with PKCS#7 and is decrypted for old peers only. The key length picks
// AES-128/192/256. The primary key encrypts; decryption tries every key (rotation).

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace brokerha::membership {

constexpr std::size_t kEncryptOverhead = 1 + 12 + 16;  // version 1

class Keyring {
 public:
  Keyring() = default;
  // Keys must be 16, 24 or 32 bytes; returns false (and adds nothing) otherwise.
  bool add_key(std::string_view key);
  bool use_key(std::string_view key);     // makes an installed key primary
  bool remove_key(std::string_view key);  // the primary key cannot be removed
  bool enabled() const noexcept { return !keys_.empty(); }
  const std::vector<std::string>& keys() const noexcept { return keys_; }

  // Encrypts with the primary key (version 1). Needs enabled().
  std::string encrypt(std::string_view plain, std::string_view aad) const;
  // Tries every key; false when none authenticates (or the blob is malformed).
  bool decrypt(std::string_view blob, std::string_view aad, std::string& plain) const;

  static bool valid_key_size(std::size_t n) noexcept { return n == 16 || n == 24 || n == 32; }

 private:
  std::vector<std::string> keys_;  // keys_[0] is primary
};

// One attempt with one key; exposed for tests. version 0 or 1.
std::string gcm_encrypt(int version, std::string_view key, std::string_view nonce,
                        std::string_view plain, std::string_view aad);
bool gcm_decrypt(std::string_view key, std::string_view blob, std::string_view aad,
                 std::string& plain);

}  // namespace brokerha::membership
