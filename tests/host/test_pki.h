// A throwaway PKI for TLS tests, made at test time with the openssl CLI (nothing touches
// the network).
#ifndef POLYPLUG_TESTS_HOST_TEST_PKI_H_
#define POLYPLUG_TESTS_HOST_TEST_PKI_H_

#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace polyplug::test {

// Runs `argv` (looked up in PATH, no shell) in `cwd` with stdout and stderr appended to
// `log`, and waits for it. OK when it exits 0.
absl::Status Run(const std::vector<std::string>& argv, const std::filesystem::path& cwd,
                 const std::filesystem::path& log);

// A CA with a server certificate (SAN IP 127.0.0.1, DNS localhost; also good as a client
// certificate, as a fleet host's own certificate is when it calls its peers) and a client
// certificate, and an unrelated CA with a client certificate of its own. EC P-256 keys,
// valid for two days.
struct Pki {
  std::filesystem::path ca_cert, ca_key;
  std::filesystem::path server_cert, server_key;
  std::filesystem::path client_cert, client_key;
  std::filesystem::path other_ca_cert, other_ca_key;
  std::filesystem::path rogue_client_cert, rogue_client_key;  // signed by the other CA
};

// Makes the PKI's files in `dir` (an openssl.log there tells what went wrong).
absl::StatusOr<Pki> MakePki(const std::filesystem::path& dir);

}  // namespace polyplug::test

#endif  // POLYPLUG_TESTS_HOST_TEST_PKI_H_
