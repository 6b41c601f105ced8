// HMAC-SHA256 challenge-response over the cluster secret (OpenSSL).
#include "transport/control/cluster_secret.h"

#include <fmt/format.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace stoker::control {

Result<ClusterSecret> ClusterSecret::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return io_error(fmt::format("cannot read the secret file {}: {}", path, std::strerror(errno)));
  }
  std::stringstream contents;
  contents << in.rdbuf();
  std::string secret = contents.str();
  while (!secret.empty() && std::isspace(static_cast<unsigned char>(secret.back()))) {
    secret.pop_back();
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && (st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    spdlog::warn("the secret file {} may be read by other users (mode {:o}); chmod 600 it", path,
                 st.st_mode & 0777);
  }
  auto loaded = from_string(std::move(secret));
  if (!loaded.is_ok()) return loaded.status().with_context(fmt::format("secret file {}", path));
  return loaded;
}

Result<ClusterSecret> ClusterSecret::from_string(std::string secret) {
  if (secret.size() < kMinSecretBytes) {
    return invalid_argument(fmt::format("the cluster secret has {} bytes; it needs at least {}",
                                        secret.size(), kMinSecretBytes));
  }
  return ClusterSecret(std::move(secret));
}

std::vector<std::byte> ClusterSecret::prove(std::string_view label,
                                            std::span<const std::byte> first,
                                            std::span<const std::byte> second) const {
  std::vector<unsigned char> message;
  message.reserve(label.size() + first.size() + second.size());
  message.insert(message.end(), label.begin(), label.end());
  const auto* a = reinterpret_cast<const unsigned char*>(first.data());
  const auto* b = reinterpret_cast<const unsigned char*>(second.data());
  message.insert(message.end(), a, a + first.size());
  message.insert(message.end(), b, b + second.size());
  std::vector<std::byte> mac(EVP_MAX_MD_SIZE);
  unsigned int length = 0;
  HMAC(EVP_sha256(), secret_.data(), static_cast<int>(secret_.size()), message.data(),
       message.size(), reinterpret_cast<unsigned char*>(mac.data()), &length);
  mac.resize(length);
  return mac;
}

std::vector<std::byte> ClusterSecret::server_proof(std::span<const std::byte> client_nonce,
                                                   std::span<const std::byte> server_nonce) const {
  return prove("stoker-coordinator-proof", client_nonce, server_nonce);
}

std::vector<std::byte> ClusterSecret::client_proof(std::span<const std::byte> server_nonce,
                                                   std::span<const std::byte> client_nonce) const {
  return prove("stoker-peer-proof", server_nonce, client_nonce);
}

bool ClusterSecret::proofs_equal(std::span<const std::byte> a, std::span<const std::byte> b) {
  return a.size() == b.size() && !a.empty() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::vector<std::byte> random_nonce() {
  std::vector<std::byte> nonce(kNonceBytes);
  if (RAND_bytes(reinterpret_cast<unsigned char*>(nonce.data()), static_cast<int>(nonce.size())) !=
      1) {
    // Without randomness the handshake would be replayable: better to fail loudly.
    spdlog::critical("RAND_bytes failed: no cryptographic randomness available");
    std::abort();
  }
  return nonce;
}

}  // namespace stoker::control
