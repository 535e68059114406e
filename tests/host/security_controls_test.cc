// Security controls of polyplug-host (docs/SECURITY.md) that no other test covers: the token
// on every PluginHost method and stream, on TCP as well as unix listeners; what health
// answers without a token; which listener addresses count as loopback; --tls-client-ca
// without a server certificate; Reload by path through a symlink leading out; a manifest
// `file` through a symlinked directory; and the session and instance limits of
// RemoteInstances.
//
// Nothing sleeps: the tests wait on calls, stream reads, the host's stderr and its exit;
// deadlines only bound how long a broken host can stall a test.
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "host/host_fixture.h"
#include "host/src/remote_instances.h"
#include "host/test_pki.h"
#include "polyplug/core/ids.h"
#include "polyplug/core/runtime.h"
#include "polyplug/host/v1/host.grpc.pb.h"
#include "support/bundle_fixture.h"

namespace polyplug::test {
namespace {

namespace fs = std::filesystem;
namespace v1 = ::polyplug::host::v1;
using grpc::health::v1::Health;
using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;
using ::testing::HasSubstr;

constexpr char kToken[] = "s3cret-token";

// A context with a deadline and, unless empty, the given authorization metadata.
std::unique_ptr<grpc::ClientContext> ContextWith(const std::string& authorization) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + kCallDeadline);
  if (!authorization.empty()) context->AddMetadata("authorization", authorization);
  return context;
}

// One call of a PluginHost method with the given authorization; returns its status.
struct MethodCall {
  std::string name;
  std::function<grpc::Status(v1::PluginHost::Stub&, const std::string&)> call;
};

// Every method of polyplug.host.v1.PluginHost, each with a request that would succeed (or
// change something) on a host serving the counter bundle, with `load_path` a loadable
// bundle directory that is not loaded yet.
std::vector<MethodCall> EveryMethod(const std::string& load_path) {
  std::vector<MethodCall> calls;
  calls.push_back({"GetHostInfo", [](v1::PluginHost::Stub& stub, const std::string& auth) {
                     v1::HostInfo response;
                     return stub.GetHostInfo(ContextWith(auth).get(), v1::GetHostInfoRequest(),
                                             &response);
                   }});
  calls.push_back({"ListBundles", [](v1::PluginHost::Stub& stub, const std::string& auth) {
                     v1::ListBundlesResponse response;
                     return stub.ListBundles(ContextWith(auth).get(), v1::ListBundlesRequest(),
                                             &response);
                   }});
  calls.push_back({"ListContracts", [](v1::PluginHost::Stub& stub, const std::string& auth) {
                     v1::ListContractsResponse response;
                     return stub.ListContracts(ContextWith(auth).get(), v1::ListContractsRequest(),
                                               &response);
                   }});
  calls.push_back({"FindContract", [](v1::PluginHost::Stub& stub, const std::string& auth) {
                     v1::FindContractRequest request;
                     request.set_name("test.counter@1");
                     v1::ContractHandle response;
                     return stub.FindContract(ContextWith(auth).get(), request, &response);
                   }});
  calls.push_back({"Reload", [](v1::PluginHost::Stub& stub, const std::string& auth) {
                     v1::ReloadRequest request;
                     request.set_name("counter");
                     v1::ReloadResponse response;
                     return stub.Reload(ContextWith(auth).get(), request, &response);
                   }});
  calls.push_back({"LoadBundle", [load_path](v1::PluginHost::Stub& stub, const std::string& auth) {
                     v1::LoadBundleRequest request;
                     request.set_path(load_path);
                     v1::LoadBundleResponse response;
                     return stub.LoadBundle(ContextWith(auth).get(), request, &response);
                   }});
  calls.push_back({"UnloadBundle", [](v1::PluginHost::Stub& stub, const std::string& auth) {
                     v1::UnloadBundleRequest request;
                     request.set_name("counter");
                     v1::UnloadBundleResponse response;
                     return stub.UnloadBundle(ContextWith(auth).get(), request, &response);
                   }});
  calls.push_back({"CreateInstance", [](v1::PluginHost::Stub& stub, const std::string& auth) {
                     v1::CreateInstanceRequest request;
                     request.set_contract("test.counter@1");
                     v1::InstanceRef response;
                     return stub.CreateInstance(ContextWith(auth).get(), request, &response);
                   }});
  calls.push_back({"Invoke", [](v1::PluginHost::Stub& stub, const std::string& auth) {
                     v1::InvokeRequest request;
                     request.set_contract("test.counter@1");
                     request.set_method("version");
                     v1::InvokeResponse response;
                     return stub.Invoke(ContextWith(auth).get(), request, &response);
                   }});
  calls.push_back({"DestroyInstance", [](v1::PluginHost::Stub& stub, const std::string& auth) {
                     v1::DestroyInstanceRequest request;
                     request.mutable_instance()->set_instance_id(1);
                     v1::DestroyInstanceResponse response;
                     return stub.DestroyInstance(ContextWith(auth).get(), request, &response);
                   }});
  calls.push_back({"Echo", [](v1::PluginHost::Stub& stub, const std::string& auth) {
                     v1::EchoRequest request;
                     request.set_payload("ping");
                     v1::EchoResponse response;
                     return stub.Echo(ContextWith(auth).get(), request, &response);
                   }});
  calls.push_back(
      {"SubscribeReloadPhases", [](v1::PluginHost::Stub& stub, const std::string& auth) {
         auto context = ContextWith(auth);
         // With a snapshot an accepted stream sends at once.
         v1::SubscribeReloadPhasesRequest request;
         request.set_include_snapshot(true);
         auto reader = stub.SubscribeReloadPhases(context.get(), request);
         v1::ReloadPhaseEvent event;
         if (reader->Read(&event)) {
           context->TryCancel();
           while (reader->Read(&event)) {
           }
           reader->Finish();
           return grpc::Status::OK;  // it sent something: not refused
         }
         return reader->Finish();
       }});
  calls.push_back({"OpenSession", [](v1::PluginHost::Stub& stub, const std::string& auth) {
                     auto context = ContextWith(auth);
                     auto reader = stub.OpenSession(context.get(), v1::OpenSessionRequest());
                     v1::SessionEvent event;
                     if (reader->Read(&event)) {
                       context->TryCancel();
                       while (reader->Read(&event)) {
                       }
                       reader->Finish();
                       return grpc::Status::OK;  // it opened a session: not refused
                     }
                     return reader->Finish();
                   }});
  return calls;
}

// GetHostInfo with the token.
v1::HostInfo HostInfoOf(v1::PluginHost::Stub& stub) {
  v1::HostInfo info;
  const grpc::Status status = stub.GetHostInfo(ContextWith(absl::StrCat("Bearer ", kToken)).get(),
                                               v1::GetHostInfoRequest(), &info);
  EXPECT_TRUE(status.ok()) << ToString(status);
  return info;
}

std::vector<std::string> BundleNamesOf(v1::PluginHost::Stub& stub) {
  v1::ListBundlesResponse list;
  const grpc::Status status = stub.ListBundles(ContextWith(absl::StrCat("Bearer ", kToken)).get(),
                                               v1::ListBundlesRequest(), &list);
  EXPECT_TRUE(status.ok()) << ToString(status);
  std::vector<std::string> names;
  for (const v1::Bundle& bundle : list.bundles()) names.push_back(bundle.name());
  return names;
}

// The authorization values a token-protected host must refuse.
std::vector<std::string> BadAuthorizations() {
  return {"",  // no metadata at all
          "Bearer wrong-token",
          absl::StrCat("Bearer ", kToken, "x"),
          absl::StrCat("Bearer ", std::string(kToken).substr(1)),
          kToken,  // no scheme
          absl::StrCat("bearer ", kToken),
          absl::StrCat("Basic ", kToken),
          absl::StrCat("Bearer  ", kToken)};
}

// Expects a host that was refused at start: the process exited with 2 and stderr has every
// one of `needles`.
void ExpectStartRefused(HostProcess& host, const std::vector<std::string>& needles) {
  const absl::Status started = host.Start();
  if (started.ok()) {
    ADD_FAILURE() << "the host started; stderr:\n" << host.Stderr();
    host.Kill(SIGTERM);
  }
  const int status = host.WaitExit();
  const std::string log = host.Stderr();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 2)
      << "polyplug-host " << DescribeWaitStatus(status) << ", expected exit code 2; stderr:\n"
      << log;
  for (const std::string& needle : needles) {
    EXPECT_THAT(log, HasSubstr(needle)) << "stderr should mention " << needle;
  }
}

void ExpectCleanStop(HostProcess& host) {
  host.Kill(SIGTERM);
  const int status = host.WaitExit();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "polyplug-host " << DescribeWaitStatus(status) << " on SIGTERM; stderr:\n"
      << host.Stderr();
}

class SecurityControlsTest : public ::testing::Test {
 protected:
  void SetUp() override { fs::create_directories(root_); }

  // A host serving the bundle root (with the counter bundle) that needs kToken.
  void StartTokenHost(std::unique_ptr<HostProcess>& host, std::vector<std::string> extra = {}) {
    CopyTestBundle("counter_v1", root_);
    const fs::path token_file = scratch_.path() / "token";
    WriteFile(token_file, absl::StrCat(kToken, "\n"));
    std::vector<std::string> args = {"--bundles", root_.string(), "--auth-token-file",
                                     token_file.string()};
    args.insert(args.end(), extra.begin(), extra.end());
    host = std::make_unique<HostProcess>(std::move(args), kToken);
  }

  const fs::path& root() const { return root_; }
  const fs::path& scratch() const { return scratch_.path(); }

 private:
  TempDir scratch_;
  fs::path root_ = scratch_.path() / "bundles";
};

// ---------------------------------------------------------------------------------------
// Token authentication

// Every PluginHost method, unary or stream, is refused with UNAUTHENTICATED without the
// right 'authorization: Bearer <token>', and none of them has any effect.
TEST_F(SecurityControlsTest, EveryPluginHostMethodNeedsTheToken) {
  std::unique_ptr<HostProcess> host;
  StartTokenHost(host);
  const absl::Status started = host->Start();
  ASSERT_TRUE(started.ok()) << started;
  // A loadable bundle that is not loaded yet (copied after the start-up scan).
  const fs::path loadable = CopyTestBundle("stateless", root());
  const v1::HostInfo before = HostInfoOf(host->stub());
  ASSERT_THAT(BundleNamesOf(host->stub()), ::testing::ElementsAre("counter"));
  // EveryMethod really is every method the service declares.
  std::vector<std::string> declared, covered;
  const google::protobuf::ServiceDescriptor* service =
      v1::HostInfo::descriptor()->file()->FindServiceByName("PluginHost");
  ASSERT_NE(service, nullptr);
  for (int i = 0; i < service->method_count(); ++i) declared.push_back(service->method(i)->name());
  for (const MethodCall& method : EveryMethod(loadable.string())) covered.push_back(method.name);
  EXPECT_THAT(covered, ::testing::UnorderedElementsAreArray(declared));

  for (const MethodCall& method : EveryMethod(loadable.string())) {
    for (const std::string& authorization : BadAuthorizations()) {
      SCOPED_TRACE(method.name + " with authorization \"" + authorization + "\"");
      const grpc::Status status = method.call(host->stub(), authorization);
      EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << ToString(status);
      EXPECT_EQ(ReasonTokenOf(status), "PERMISSION_DENIED") << ToString(status);
    }
  }
  // Nothing happened: no phase event, no bundle loaded or unloaded, no instance or session.
  const v1::HostInfo after = HostInfoOf(host->stub());
  EXPECT_EQ(after.last_seq(), before.last_seq());
  EXPECT_EQ(after.registry_revision(), before.registry_revision());
  EXPECT_EQ(after.instance_count(), 0u);
  EXPECT_EQ(after.session_count(), 0u);
  EXPECT_THAT(BundleNamesOf(host->stub()), ::testing::ElementsAre("counter"));

  // With the token every one of them goes through (so the refusals above were the token's).
  const std::string good = absl::StrCat("Bearer ", kToken);
  for (const MethodCall& method : EveryMethod(loadable.string())) {
    SCOPED_TRACE(method.name + " with the token");
    const grpc::Status status = method.call(host->stub(), good);
    EXPECT_NE(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << ToString(status);
  }
  ExpectCleanStop(*host);
}

// The token applies to every listener: a plaintext loopback TCP listener needs it as much
// as the unix socket does.
TEST_F(SecurityControlsTest, TokenIsNeededOnATcpListenerToo) {
  std::unique_ptr<HostProcess> host;
  StartTokenHost(host);
  host->AddListenAddress("127.0.0.1:0");
  const absl::Status started = host->Start();
  ASSERT_TRUE(started.ok()) << started;
  const absl::StatusOr<std::string> address = host->ServingAddress("127.0.0.1:");
  ASSERT_TRUE(address.ok()) << address.status();
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  auto stub = v1::PluginHost::NewStub(
      grpc::CreateCustomChannel(*address, grpc::InsecureChannelCredentials(), args));
  for (const std::string& authorization : {std::string(), std::string("Bearer wrong")}) {
    SCOPED_TRACE("authorization \"" + authorization + "\"");
    v1::HostInfo info;
    const grpc::Status status =
        stub->GetHostInfo(ContextWith(authorization).get(), v1::GetHostInfoRequest(), &info);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << ToString(status);
  }
  v1::HostInfo info;
  const grpc::Status status = stub->GetHostInfo(ContextWith(absl::StrCat("Bearer ", kToken)).get(),
                                                v1::GetHostInfoRequest(), &info);
  ASSERT_TRUE(status.ok()) << ToString(status);
  EXPECT_EQ(info.host_epoch(), host->epoch());
  ExpectCleanStop(*host);
}

// What is documented, not a control: grpc.health.v1.Health needs no token, so a client
// without one learns whether a bundle of a given name is loaded.
TEST_F(SecurityControlsTest, HealthAnswersWithoutTheTokenAndRevealsLoadedBundleNames) {
  std::unique_ptr<HostProcess> host;
  StartTokenHost(host);
  const absl::Status started = host->Start();
  ASSERT_TRUE(started.ok()) << started;
  auto health = Health::NewStub(host->channel());
  auto check = [&](const std::string& service, HealthCheckResponse* response) {
    grpc::ClientContext context;  // no authorization metadata
    context.set_deadline(std::chrono::system_clock::now() + kCallDeadline);
    HealthCheckRequest request;
    request.set_service(service);
    return health->Check(&context, request, response);
  };
  HealthCheckResponse response;
  grpc::Status status = check("", &response);
  ASSERT_TRUE(status.ok()) << ToString(status);
  EXPECT_EQ(response.status(), HealthCheckResponse::SERVING);
  status = check("counter", &response);
  ASSERT_TRUE(status.ok()) << ToString(status);
  EXPECT_EQ(response.status(), HealthCheckResponse::SERVING);
  status = check("no-such-bundle", &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND) << ToString(status);
  ExpectCleanStop(*host);
}

// ---------------------------------------------------------------------------------------
// Listeners

// Loopback means "localhost" or a loopback address literal (127.0.0.0/8, ::1); these need
// neither TLS nor a token.
TEST_F(SecurityControlsTest, LoopbackListenersNeedNoProtection) {
  for (const std::string address : {"127.0.0.1:0", "127.0.0.2:0", "localhost:0"}) {
    SCOPED_TRACE(address);
    HostProcess host({});
    host.AddListenAddress(address);
    const absl::Status started = host.Start();
    ASSERT_TRUE(started.ok()) << started;
    const std::string prefix = address.substr(0, address.size() - 1);
    const absl::StatusOr<std::string> serving = host.ServingAddress(prefix);
    ASSERT_TRUE(serving.ok()) << serving.status();
    ExpectCleanStop(host);
  }
}

// Any other host name is not loopback, even if it would resolve to a loopback address:
// without TLS, a token or --insecure-remote it is refused before anything is bound.
TEST_F(SecurityControlsTest, HostNamesOtherThanLocalhostAreNotLoopback) {
  for (const std::string address : {"127.0.0.1.nip.invalid:0", "polyplug.invalid:0"}) {
    SCOPED_TRACE(address);
    HostProcess host({});
    host.AddListenAddress(address);
    ExpectStartRefused(host, {address, "is not a loopback address", "--insecure-remote"});
  }
}

// --tls-client-ca alone must not leave an operator believing mTLS is on: without
// --tls-cert/--tls-key there is no TLS at all, so the flag would have no effect.
TEST_F(SecurityControlsTest, ClientCaWithoutAServerCertificateIsRefused) {
  TempDir pki_dir;
  const absl::StatusOr<Pki> pki = MakePki(pki_dir.path());
  ASSERT_TRUE(pki.ok()) << pki.status();
  HostProcess host({"--tls-client-ca", pki->ca_cert.string()});
  host.AddListenAddress("127.0.0.1:0");
  ExpectStartRefused(host, {"--tls-client-ca"});
}

// ---------------------------------------------------------------------------------------
// Path confinement

// Reload by path through a symlink in a root that leads out, and the root itself, are
// refused like LoadBundle's; nothing is reloaded.
TEST_F(SecurityControlsTest, ReloadByPathThroughASymlinkLeadingOutIsRefused) {
  std::unique_ptr<HostProcess> host;
  StartTokenHost(host);
  const fs::path outside = scratch() / "outside";
  fs::create_directories(outside);
  // The loaded counter's own directory, reached from outside through a symlink chain:
  // <root>/escape -> <scratch>/outside, where outside/counter_v1 is a copy of the bundle.
  CopyTestBundle("counter_v1", outside);
  const absl::Status started = host->Start();
  ASSERT_TRUE(started.ok()) << started;
  fs::create_directory_symlink(outside, root() / "escape");  // after start: not scanned
  const uint64_t last_seq = HostInfoOf(host->stub()).last_seq();

  for (const std::string& path :
       {(root() / "escape" / "counter_v1").string(), std::string("escape/counter_v1"),
        root().string(), (root() / ".").string()}) {
    SCOPED_TRACE("Reload path " + path);
    auto context = host->NewContext();
    v1::ReloadRequest request;
    request.set_path(path);
    v1::ReloadResponse response;
    const grpc::Status status = host->stub().Reload(context.get(), request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED) << ToString(status);
    EXPECT_EQ(ReasonTokenOf(status), "PERMISSION_DENIED") << ToString(status);
    EXPECT_EQ(TrailingReasonOf(*context), "PERMISSION_DENIED");
  }
  EXPECT_EQ(HostInfoOf(host->stub()).last_seq(), last_seq) << "a refused reload emitted events";
  ExpectCleanStop(*host);
}

// A manifest `file` reached through a symlinked directory that leads out of the bundle is
// refused (the artifact itself is a regular file, so only the directory check can catch it).
TEST_F(SecurityControlsTest, ManifestFileThroughASymlinkedDirectoryLeadingOutIsRefused) {
  std::unique_ptr<HostProcess> host;
  StartTokenHost(host);
  const absl::Status started = host->Start();
  ASSERT_TRUE(started.ok()) << started;
  const fs::path bundle = CopyTestBundle("stateless", root());
  const fs::path outside = scratch() / "outside-lib";
  fs::create_directories(outside);
  fs::rename(bundle / "libstateless.so", outside / "libstateless.so");
  fs::create_directory_symlink(outside, bundle / "sub");
  ASSERT_TRUE(ReplaceInFile(bundle / "manifest.toml", "file = \"libstateless.so\"",
                            "file = \"sub/libstateless.so\""));
  const uint64_t last_seq = HostInfoOf(host->stub()).last_seq();

  auto context = host->NewContext();
  v1::LoadBundleRequest request;
  request.set_path(bundle.string());
  v1::LoadBundleResponse response;
  const grpc::Status status = host->stub().LoadBundle(context.get(), request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED) << ToString(status);
  EXPECT_EQ(ReasonTokenOf(status), "ARTIFACT_PATH_ESCAPE") << ToString(status);
  EXPECT_THAT(status.error_message(), HasSubstr("field 'file'"));
  EXPECT_THAT(status.error_message(), HasSubstr("symlinked directory"));
  EXPECT_THAT(BundleNamesOf(host->stub()), ::testing::ElementsAre("counter"));
  EXPECT_EQ(HostInfoOf(host->stub()).last_seq(), last_seq);
  ExpectCleanStop(*host);
}

// ---------------------------------------------------------------------------------------
// Limits of remote instances (fixed in the host: 4096 sessions, 65536 instances; the
// limits themselves are tested here with small values).

TEST(RemoteInstancesLimitsTest, SessionsAndInstancesPastTheLimitAreResourceExhausted) {
  auto runtime = core::Runtime::Create(core::RuntimeOptions());
  ASSERT_TRUE(runtime.ok()) << runtime.status();
  auto loaded = (*runtime)->LoadBundle(TestBundleDir("counter_v1"));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto handle = (*runtime)->Find(core::GuestContractId("test.counter", 1), 0);
  ASSERT_TRUE(handle.ok()) << handle.status();
  {
    host::RemoteInstances instances(
        **runtime, host::RemoteInstancesOptions{.max_instances = 2, .max_sessions = 2});
    auto first_session = instances.OpenSession();
    ASSERT_TRUE(first_session.ok()) << first_session.status();
    ASSERT_TRUE(instances.OpenSession().ok());
    const absl::StatusOr<uint64_t> third_session = instances.OpenSession();
    EXPECT_EQ(third_session.status().code(), absl::StatusCode::kResourceExhausted)
        << third_session.status();
    instances.CloseSession(*first_session);
    EXPECT_TRUE(instances.OpenSession().ok()) << "a closed session frees its slot";

    auto first = instances.Create(*handle, "");
    ASSERT_TRUE(first.ok()) << first.status();
    ASSERT_TRUE(instances.Create(*handle, "").ok());
    const absl::StatusOr<uint64_t> third = instances.Create(*handle, "");
    EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted) << third.status();
    EXPECT_EQ(instances.size(), 2u);
    ASSERT_TRUE(instances.Destroy(*first).ok());
    EXPECT_TRUE(instances.Create(*handle, "").ok()) << "a destroyed instance frees its slot";
  }
}

// The host's fixed limits are the documented ones.
TEST(RemoteInstancesLimitsTest, DefaultLimitsAreTheDocumentedOnes) {
  const host::RemoteInstancesOptions options;
  EXPECT_EQ(options.max_sessions, 4096u);
  EXPECT_EQ(options.max_instances, 65536u);
  EXPECT_EQ(options.sessionless_idle_timeout, absl::Minutes(10));
}

}  // namespace
}  // namespace polyplug::test
