// The optional cluster secret (--secret-file) and the challenge-response
// that proves knowledge of it without sending it: each side answers the
// other's random nonce with HMAC-SHA256(secret, label | nonce | nonce).
// The labels differ per direction, so a proof cannot be reflected back.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include "stoker/result.h"

namespace stoker::control {

inline constexpr size_t kNonceBytes = 32;
inline constexpr size_t kMinSecretBytes = 16;

class ClusterSecret {
 public:
  // Reads the secret from a file (trailing whitespace dropped). Fails on an
  // unreadable, empty or too short secret; warns when others may read the file.
  static Result<ClusterSecret> load(const std::string& path);
  static Result<ClusterSecret> from_string(std::string secret);

  // The proof a server gives for the client's nonce, and the client's for the server's.
  std::vector<std::byte> server_proof(std::span<const std::byte> client_nonce,
                                      std::span<const std::byte> server_nonce) const;
  std::vector<std::byte> client_proof(std::span<const std::byte> server_nonce,
                                      std::span<const std::byte> client_nonce) const;
  // Compares in constant time.
  static bool proofs_equal(std::span<const std::byte> a, std::span<const std::byte> b);

 private:
  explicit ClusterSecret(std::string secret) : secret_(std::move(secret)) {}
  std::vector<std::byte> prove(std::string_view label, std::span<const std::byte> first,
                               std::span<const std::byte> second) const;
  std::string secret_;
};

// kNonceBytes from the OS's cryptographic random source.
std::vector<std::byte> random_nonce();

}  // namespace stoker::control
