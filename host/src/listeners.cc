#include "host/src/listeners.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "polyplug/core/error.h"
#include "wire/wire.h"

namespace polyplug::host {
namespace {

namespace fs = std::filesystem;
using core::ErrorReason;
using core::MakeError;

constexpr absl::string_view kUnixPrefix = "unix:";

bool IsLoopbackHost(absl::string_view address) {
  // address is HOST:PORT; HOST may be [v6].
  const size_t colon = address.rfind(':');
  absl::string_view host = address.substr(0, colon);
  if (absl::StartsWith(host, "[") && absl::EndsWith(host, "]"))
    host = host.substr(1, host.size() - 2);
  if (host == "localhost") return true;
  // Only address literals count: a name such as 127.example.com could resolve anywhere.
  const std::string literal(host);
  in_addr v4{};
  if (inet_pton(AF_INET, literal.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  return inet_pton(AF_INET6, literal.c_str(), &v6) == 1 && IN6_IS_ADDR_LOOPBACK(&v6);
}

// Whether something accepts connections on the unix socket at `path`.
bool SocketIsServed(const fs::path& path) {
  sockaddr_un address{};
  if (path.native().size() >= sizeof(address.sun_path)) return false;
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, path.c_str(), path.native().size());
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  const bool served =
      connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) == 0;
  close(fd);
  return served;
}

bool IsTls(const ListenerOptions& options) {
  return !options.tls_cert_pem.empty() && !options.tls_key_pem.empty();
}

}  // namespace

Listeners::Listeners(ListenerOptions options) : options_(std::move(options)) {}

Listeners::~Listeners() {
  std::error_code ec;
  for (const UnixSocket& s : unix_sockets_) {
    fs::remove(s.path, ec);
    if (!s.staging.empty()) fs::remove_all(s.staging, ec);
  }
}

absl::StatusOr<std::unique_ptr<Listeners>> Listeners::Check(ListenerOptions options) {
  if (options.addresses.empty()) options.addresses.push_back(wire::DefaultHostAddress());
  const bool tls = IsTls(options);
  if (options.tls_cert_pem.empty() != options.tls_key_pem.empty()) {
    return MakeError(ErrorReason::kInvalidArgument, "--tls-cert and --tls-key go together");
  }
  if (!tls && !options.tls_client_ca_pem.empty()) {
    // Client certificates are checked only in a TLS handshake: without a server
    // certificate the host would serve plaintext and check nobody.
    return MakeError(ErrorReason::kInvalidArgument,
                     "--tls-client-ca needs --tls-cert and --tls-key (client certificates are "
                     "checked only over TLS)");
  }
  std::unique_ptr<Listeners> listeners(new Listeners(options));
  for (const std::string& address : options.addresses) {
    if (absl::StartsWith(address, kUnixPrefix)) {
      const fs::path path = address.substr(kUnixPrefix.size());
      std::error_code ec;
      // A socket left by a host that died is replaced; a live host's socket and any other
      // file are not touched.
      if (fs::is_socket(path, ec) && SocketIsServed(path)) {
        return MakeError(
            ErrorReason::kInvalidArgument,
            absl::StrCat("--listen ", address, ": another process is serving on this socket"));
      }
      if (fs::exists(fs::symlink_status(path, ec)) && !fs::is_socket(path, ec)) {
        return MakeError(ErrorReason::kInvalidArgument,
                         absl::StrCat("--listen ", address, ": ", path.string(),
                                      " exists and is not a socket; it is left as it is"));
      }
      listeners->unix_sockets_.push_back({path, {}});
      continue;
    }
    if (address.find(':') == std::string::npos) {
      return MakeError(ErrorReason::kInvalidArgument,
                       absl::StrCat("--listen ", address, ": expected unix:PATH or HOST:PORT"));
    }
    if (!IsLoopbackHost(address) && !tls && !options.has_auth_token && !options.insecure_remote) {
      return MakeError(ErrorReason::kPermissionDenied,
                       absl::StrCat("--listen ", address,
                                    " is not a loopback address; loading code is the most "
                                    "dangerous thing this API does, so a remote listener needs "
                                    "TLS (--tls-cert/--tls-key) or a token (--auth-token-file), "
                                    "or an explicit --insecure-remote"));
    }
    listeners->tcp_ports_.push_back({address, std::make_unique<int>(0)});
  }
  return listeners;
}

absl::Status Listeners::AddTo(grpc::ServerBuilder& builder) {
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (IsTls(options_)) {
    grpc::SslServerCredentialsOptions ssl(
        options_.tls_client_ca_pem.empty()
            ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
            : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    ssl.pem_root_certs = options_.tls_client_ca_pem;
    ssl.pem_key_cert_pairs.push_back({options_.tls_key_pem, options_.tls_cert_pem});
    credentials = grpc::SslServerCredentials(ssl);
  }
  for (UnixSocket& s : unix_sockets_) {
    std::error_code ec;
    if (fs::is_socket(s.path, ec)) fs::remove(s.path, ec);  // a dead host's (Check said so)
    // The private directory sits beside the socket, so that the socket can be renamed into
    // place; mkdtemp makes it 0700.
    std::string staging = (s.path.parent_path() / ".pp-XXXXXX").string();
    if (mkdtemp(staging.data()) == nullptr) {
      return MakeError(ErrorReason::kInvalidArgument,
                       absl::StrCat("--listen unix:", s.path.string(),
                                    ": cannot create a private "
                                    "directory beside it: ",
                                    std::strerror(errno)));
    }
    s.staging = staging;
    // Unix sockets are local: plaintext with file permissions as the access control.
    builder.AddListeningPort(absl::StrCat(kUnixPrefix, (s.staging / "s").string()),
                             grpc::InsecureServerCredentials());
  }
  for (auto& [address, port] : tcp_ports_) {
    // Port 0 gets a free port; Publish() reports it.
    builder.AddListeningPort(address, credentials, port.get());
  }
  return absl::OkStatus();
}

absl::Status Listeners::Publish() {
  for (UnixSocket& s : unix_sockets_) {
    const fs::path bound = s.staging / "s";
    // Only this user can reach `bound` (its directory is 0700), so the mode is set before
    // anyone else can connect; rename keeps the bound socket, now at its public path.
    // RENAME_NOREPLACE: whatever appeared at the path meanwhile is not replaced.
    if (chmod(bound.c_str(), S_IRUSR | S_IWUSR) != 0 ||
        renameat2(AT_FDCWD, bound.c_str(), AT_FDCWD, s.path.c_str(), RENAME_NOREPLACE) != 0) {
      return MakeError(ErrorReason::kInvalidArgument,
                       absl::StrCat("--listen unix:", s.path.string(), ": ", std::strerror(errno)));
    }
    std::error_code ec;
    fs::remove(s.staging, ec);
    s.staging.clear();
  }
  served_ = options_.addresses;
  for (std::string& address : served_) {
    for (const auto& [requested, port] : tcp_ports_) {
      if (address == requested && absl::EndsWith(address, ":0")) {
        address = absl::StrCat(address.substr(0, address.size() - 1), *port);
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace polyplug::host
