#include "host/test_pki.h"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "host/host_fixture.h"
#include "support/bundle_fixture.h"
#include "support/child_process.h"

namespace polyplug::test {

namespace fs = std::filesystem;

// Runs `argv` (looked up in PATH, no shell) in `cwd` with stdout and stderr appended to
// `log`, and waits for it. OK when it exits 0.
absl::Status Run(const std::vector<std::string>& argv, const fs::path& cwd, const fs::path& log) {
  SpawnOptions spawn;
  spawn.argv = argv;
  spawn.search_path = true;
  spawn.out = Redirect::Append(log);
  spawn.err = Redirect::ToStdout();
  spawn.cwd = cwd;
  const std::string command = absl::StrJoin(argv, " ");
  absl::StatusOr<pid_t> started = Spawn(spawn);
  if (!started.ok()) return started.status();
  const pid_t pid = *started;
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) {
      return absl::InternalError(absl::StrCat("waitpid: ", std::strerror(errno)));
    }
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat("`", command, "` ", DescribeWaitStatus(status), "; output:\n", ReadFile(log)));
}

absl::StatusOr<Pki> MakePki(const fs::path& dir) {
  const fs::path log = dir / "openssl.log";
  // A config of our own, so that neither the system openssl.cnf nor OPENSSL_CONF matters.
  const fs::path config = dir / "openssl.cnf";
  WriteFile(config,
            "[req]\n"
            "distinguished_name = dn\n"
            "prompt = no\n"
            "[dn]\n"
            "CN = polyplug test CA\n"
            "[v3_ca]\n"
            "basicConstraints = critical,CA:TRUE\n"
            "keyUsage = critical,keyCertSign,cRLSign\n"
            "subjectKeyIdentifier = hash\n"
            "[server]\n"
            "basicConstraints = CA:FALSE\n"
            "keyUsage = critical,digitalSignature\n"
            "extendedKeyUsage = serverAuth,clientAuth\n"
            "subjectAltName = IP:127.0.0.1,DNS:localhost\n"
            "authorityKeyIdentifier = keyid\n"
            "[client]\n"
            "basicConstraints = CA:FALSE\n"
            "keyUsage = critical,digitalSignature\n"
            "extendedKeyUsage = clientAuth\n"
            "authorityKeyIdentifier = keyid\n");
  const std::vector<std::string> new_key = {"-newkey", "ec", "-pkeyopt",
                                            "ec_paramgen_curve:prime256v1", "-nodes"};
  auto make_ca = [&](const std::string& name, fs::path* cert, fs::path* key) {
    *cert = dir / (name + ".pem");
    *key = dir / (name + ".key");
    std::vector<std::string> argv = {"openssl",     "req",
                                     "-x509",       "-new",
                                     "-config",     config.string(),
                                     "-extensions", "v3_ca",
                                     "-subj",       "/CN=polyplug test " + name,
                                     "-days",       "2"};
    argv.insert(argv.end(), new_key.begin(), new_key.end());
    argv.insert(argv.end(), {"-keyout", key->string(), "-out", cert->string()});
    return Run(argv, dir, log);
  };
  int serial = 100;
  auto make_leaf = [&](const std::string& name, const std::string& common_name,
                       const std::string& section, const fs::path& ca_cert, const fs::path& ca_key,
                       fs::path* cert, fs::path* key) -> absl::Status {
    *cert = dir / (name + ".pem");
    *key = dir / (name + ".key");
    const fs::path csr = dir / (name + ".csr");
    std::vector<std::string> req = {
        "openssl", "req", "-new", "-config", config.string(), "-subj", "/CN=" + common_name};
    req.insert(req.end(), new_key.begin(), new_key.end());
    req.insert(req.end(), {"-keyout", key->string(), "-out", csr.string()});
    if (absl::Status s = Run(req, dir, log); !s.ok()) return s;
    return Run({"openssl", "x509", "-req", "-in", csr.string(), "-CA", ca_cert.string(), "-CAkey",
                ca_key.string(), "-set_serial", std::to_string(++serial), "-days", "2", "-extfile",
                config.string(), "-extensions", section, "-out", cert->string()},
               dir, log);
  };
  Pki pki;
  for (absl::Status s : {
           make_ca("ca", &pki.ca_cert, &pki.ca_key),
           make_ca("other-ca", &pki.other_ca_cert, &pki.other_ca_key),
           make_leaf("server", "localhost", "server", pki.ca_cert, pki.ca_key, &pki.server_cert,
                     &pki.server_key),
           make_leaf("client", "polyplug test client", "client", pki.ca_cert, pki.ca_key,
                     &pki.client_cert, &pki.client_key),
           make_leaf("rogue-client", "polyplug rogue client", "client", pki.other_ca_cert,
                     pki.other_ca_key, &pki.rogue_client_cert, &pki.rogue_client_key),
       }) {
    if (!s.ok()) return s;
  }
  return pki;
}

}  // namespace polyplug::test
