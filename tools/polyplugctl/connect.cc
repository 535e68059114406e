#include "polyplugctl/connect.h"

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace polyplug::ctl {
namespace {

absl::StatusOr<std::string> ReadFileFlag(const CommandLine& args, absl::string_view flag) {
  const std::string path = args.Get(flag);
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("--", flag, " ", path, ": cannot read"));
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// The connection options the global flags ask for: timeout, token and TLS.
absl::StatusOr<client::ConnectOptions> ConnectOptionsOf(const CommandLine& args,
                                                        std::optional<absl::Duration> timeout) {
  client::ConnectOptions options;
  if (timeout) options.call_timeout = *timeout;
  if (args.Has("token-file")) {
    auto token = ReadFileFlag(args, "token-file");
    if (!token.ok()) return token.status();
    options.auth_token = std::string(absl::StripAsciiWhitespace(*token));
    if (options.auth_token.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--token-file ", args.Get("token-file"), " is empty"));
    }
  } else if (const char* env = std::getenv(kTokenEnv); env != nullptr) {
    // The token itself, so that a CI job need not write its secret to disk. Empty: none.
    options.auth_token = std::string(absl::StripAsciiWhitespace(env));
  }
  options.tls = args.Has("tls") || args.Has("tls-ca") || args.Has("tls-cert");
  for (auto [flag, into] : {std::pair{"tls-ca", &options.tls_root_certs_pem},
                            std::pair{"tls-cert", &options.tls_client_cert_pem},
                            std::pair{"tls-key", &options.tls_client_key_pem}}) {
    if (!args.Has(flag)) continue;
    auto pem = ReadFileFlag(args, flag);
    if (!pem.ok()) return pem.status();
    *into = *pem;
  }
  options.tls_server_name = args.Get("tls-server-name");
  if (!options.tls_server_name.empty()) options.tls = true;
  return options;
}

}  // namespace

absl::StatusOr<absl::Duration> ParseDuration(absl::string_view flag, const std::string& text) {
  absl::Duration d;
  int64_t seconds = 0;
  if (absl::SimpleAtoi(text, &seconds)) {
    d = absl::Seconds(seconds);
  } else if (!absl::ParseDuration(text, &d)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, " wants a duration such as 30s, 2m or 500ms, not '", text, "'"));
  }
  if (d <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, " must be positive"));
  }
  return d;
}

absl::StatusOr<std::optional<absl::Duration>> ParseTimeout(const CommandLine& args) {
  if (!args.Has("timeout")) return std::nullopt;
  auto d = ParseDuration("timeout", args.Get("timeout"));
  if (!d.ok()) return d.status();
  return *d;
}

std::string HostTarget(const CommandLine& args) {
  std::string target = args.Get("host");
  if (target.empty()) {
    const char* env = std::getenv("POLYPLUG_HOST");
    target = env != nullptr && env[0] != '\0' ? env : client::DefaultHostTarget();
  }
  return target;
}

absl::StatusOr<std::unique_ptr<client::HostClient>> ConnectFromFlags(
    const CommandLine& args, std::optional<absl::Duration> timeout) {
  return ConnectTo(args, HostTarget(args), timeout);
}

absl::StatusOr<std::unique_ptr<client::HostClient>> ConnectTo(
    const CommandLine& args, const std::string& target, std::optional<absl::Duration> timeout) {
  auto options = ConnectOptionsOf(args, timeout);
  if (!options.ok()) return options.status();
  return client::HostClient::Connect(target, *std::move(options));
}

}  // namespace polyplug::ctl
