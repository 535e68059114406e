// Listeners: the addresses polyplug-host serves on, checked before anything starts, bound
// with their credentials, and unix sockets that nobody else can connect to.
//
// Loading code is the most dangerous thing the API does, so a TCP address that is not a
// loopback literal needs TLS or a token (or an explicit insecure_remote). Unix sockets are
// local and plaintext; their file mode (0600) is the access control. They are bound in a
// private directory (0700) and moved into place only once their mode is set, so there is no
// moment at which another user could connect, and no process-wide umask is touched.
#ifndef POLYPLUG_HOST_SRC_LISTENERS_H_
#define POLYPLUG_HOST_SRC_LISTENERS_H_

#include <grpcpp/grpcpp.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace polyplug::host {

struct ListenerOptions {
  // "unix:PATH" or "HOST:PORT" (port 0: any free one). Empty: wire::DefaultHostAddress().
  std::vector<std::string> addresses;
  std::string tls_cert_pem, tls_key_pem, tls_client_ca_pem;  // TLS when cert and key are set
  bool has_auth_token = false;
  bool insecure_remote = false;
};

class Listeners {
 public:
  // Checks every address and the TLS options: the address syntax, the remote-listener rule,
  // and that no live host serves a unix socket already (one a dead host left is replaced).
  // INVALID_ARGUMENT or PERMISSION_DENIED naming the flag.
  static absl::StatusOr<std::unique_ptr<Listeners>> Check(ListenerOptions options);
  ~Listeners();  // removes the unix sockets and the private directories

  Listeners(const Listeners&) = delete;
  Listeners& operator=(const Listeners&) = delete;

  // Adds every listener to `builder`, unix sockets in their private directories.
  absl::Status AddTo(grpc::ServerBuilder& builder);
  // After the server started: sets the unix sockets' mode to 0600 and moves them into place,
  // and notes the ports chosen for ":0".
  absl::Status Publish();

  // The addresses as served: "HOST:0" becomes "HOST:<port>". Valid after Publish().
  const std::vector<std::string>& addresses() const { return served_; }

 private:
  struct UnixSocket {
    std::filesystem::path path;     // where clients connect
    std::filesystem::path staging;  // a private directory the socket is bound in first
  };
  explicit Listeners(ListenerOptions options);

  const ListenerOptions options_;
  std::vector<UnixSocket> unix_sockets_;
  std::vector<std::pair<std::string, std::unique_ptr<int>>> tcp_ports_;  // address, port
  std::vector<std::string> served_;
};

}  // namespace polyplug::host

#endif  // POLYPLUG_HOST_SRC_LISTENERS_H_
