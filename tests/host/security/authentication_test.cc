// Token authentication (docs/SECURITY.md, "Token authentication"): with --auth-token-file,
// every PluginHost method and stream and server reflection (v1 and v1alpha) need
// 'authorization: Bearer <token>' on every listener, unix socket and TCP alike; a refusal is
// UNAUTHENTICATED with [PERMISSION_DENIED] and the reason trailer and has no effect; a
// missing or empty token file is refused at start. Health needs no token (health_test.cc).
//
// The fixtures of tests/host/security: security_fixture.h (HostSecurityTest,
// SecurityControlsTest) and host/host_process_fixture.h (HostProcessTest). docs/SECURITY.md
// cites these tests by name: keep its table in step when one moves or is renamed.
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
#include "grpc/reflection/v1/reflection.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "gtest/gtest.h"
#include "host/host_fixture.h"
#include "host/host_process_fixture.h"
#include "host/security/security_fixture.h"
#include "polyplug/host/v1/host.grpc.pb.h"
#include "support/bundle_fixture.h"

namespace polyplug::test {
namespace {

namespace fs = std::filesystem;
namespace v1 = ::polyplug::host::v1;
using ::testing::IsEmpty;
using ::testing::SizeIs;

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
  calls.push_back({"PushBundle", [](v1::PluginHost::Stub& stub, const std::string& auth) {
                     // A header alone: with the token the host answers (NO_DEPLOY_ROOT),
                     // without it UNAUTHENTICATED, before reading anything.
                     auto context = ContextWith(auth);
                     v1::PushBundleResponse response;
                     auto writer = stub.PushBundle(context.get(), &response);
                     v1::PushBundleRequest header;
                     header.mutable_header()->set_bundle_name("counter");
                     if (writer->Write(header)) writer->WritesDone();
                     return writer->Finish();
                   }});
  calls.push_back({"FetchBundle", [](v1::PluginHost::Stub& stub, const std::string& auth) {
                     // With the token: FAILED_PRECONDITION (DIGEST_MISMATCH), a build this
                     // host does not have.
                     auto context = ContextWith(auth);
                     v1::FetchBundleRequest request;
                     request.set_bundle_name("counter");
                     request.set_bundle_digest(std::string(64, '0'));
                     auto reader = stub.FetchBundle(context.get(), request);
                     v1::PushBundleRequest message;
                     while (reader->Read(&message)) {
                     }
                     return reader->Finish();
                   }});
  calls.push_back({"GetOperation", [](v1::PluginHost::Stub& stub, const std::string& auth) {
                     // With the token: NOT_FOUND (OPERATION_NOT_FOUND).
                     v1::GetOperationRequest request;
                     request.set_request_id("never-sent");
                     v1::Operation response;
                     return stub.GetOperation(ContextWith(auth).get(), request, &response);
                   }});
  calls.push_back({"EchoStream", [](v1::PluginHost::Stub& stub, const std::string& auth) {
                     auto context = ContextWith(auth);
                     v1::EchoStreamResponse response;
                     auto writer = stub.EchoStream(context.get(), &response);
                     v1::EchoRequest request;
                     request.set_payload("ping");
                     if (writer->Write(request)) writer->WritesDone();
                     return writer->Finish();
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

// Server reflection's list_services, with `authorization` metadata unless empty. `Service`
// is grpc::reflection::v1::ServerReflection or its v1alpha twin; `Request`/`Response` are
// the matching messages. Appends the service names to `services`.
template <typename Service, typename Request, typename Response>
grpc::Status ListServices(const std::shared_ptr<grpc::Channel>& channel,
                          const std::string& authorization, std::vector<std::string>* services) {
  auto stub = Service::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + kCallDeadline);
  if (!authorization.empty()) context.AddMetadata("authorization", authorization);
  auto stream = stub->ServerReflectionInfo(&context);
  Request request;
  request.set_list_services("");
  stream->Write(request);
  stream->WritesDone();
  Response response;
  while (stream->Read(&response)) {
    for (const auto& service : response.list_services_response().service()) {
      services->push_back(service.name());
    }
  }
  return stream->Finish();
}

grpc::Status ListServicesV1(const std::shared_ptr<grpc::Channel>& channel,
                            const std::string& authorization, std::vector<std::string>* services) {
  return ListServices<grpc::reflection::v1::ServerReflection,
                      grpc::reflection::v1::ServerReflectionRequest,
                      grpc::reflection::v1::ServerReflectionResponse>(channel, authorization,
                                                                      services);
}

grpc::Status ListServicesV1Alpha(const std::shared_ptr<grpc::Channel>& channel,
                                 const std::string& authorization,
                                 std::vector<std::string>* services) {
  return ListServices<grpc::reflection::v1alpha::ServerReflection,
                      grpc::reflection::v1alpha::ServerReflectionRequest,
                      grpc::reflection::v1alpha::ServerReflectionResponse>(channel, authorization,
                                                                           services);
}

TEST_F(HostProcessTest, AuthTokenIsRequiredCheckedAndAccepted) {
  Copy("counter_v1");
  const fs::path token_file = scratch() / "token";
  WriteFile(token_file, "s3cret-token\n");
  ASSERT_NO_FATAL_FAILURE(StartHost({"--auth-token-file", token_file.string()}, "s3cret-token"));

  auto call_info = [&](const std::string& authorization) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + kCallDeadline);
    if (!authorization.empty()) context.AddMetadata("authorization", authorization);
    v1::HostInfo info;
    return host().stub().GetHostInfo(&context, v1::GetHostInfoRequest(), &info);
  };
  EXPECT_EQ(call_info("").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(call_info("Bearer wrong").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(call_info("Bearer s3cret-toke").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(call_info("Bearer s3cret-token-and-more").error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(call_info("s3cret-token").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  const grpc::Status accepted = call_info("Bearer s3cret-token");
  EXPECT_TRUE(accepted.ok()) << ToString(accepted);

  {
    // A reload without the token does nothing.
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + kCallDeadline);
    v1::ReloadRequest request;
    request.set_name("counter");
    v1::ReloadResponse response;
    const grpc::Status status = host().stub().Reload(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << ToString(status);
    EXPECT_EQ(HostInfo().last_seq(), host().info_at_start().last_seq());
  }
  {
    // Nor does a stream.
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(std::chrono::system_clock::now() + kCallDeadline);
    Subscription sub(host().stub(), v1::SubscribeReloadPhasesRequest(), std::move(context));
    EXPECT_THAT(Describe(sub.ReadToEnd()), IsEmpty());
    EXPECT_EQ(sub.Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED)
        << ToString(sub.Finish());
  }
  // With the token (HostProcess adds it) everything works.
  const v1::ReloadResponse reload = ReloadOk("counter");
  EXPECT_THAT(reload.events(), SizeIs(2));

  // Health needs no token.
  for (const std::string service : {"", "counter"}) {
    grpc::health::v1::HealthCheckResponse response;
    const grpc::Status status = HealthCheck(host().channel(), service, &response);
    EXPECT_TRUE(status.ok()) << "service \"" << service << "\": " << ToString(status);
    EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING)
        << "service \"" << service << "\"";
  }
}

TEST_F(HostProcessTest, AuthRejectionCarriesTheReasonTokenAndTrailer) {
  Copy("counter_v1");
  const fs::path token_file = scratch() / "token";
  WriteFile(token_file, "s3cret-token\n");
  ASSERT_NO_FATAL_FAILURE(StartHost({"--auth-token-file", token_file.string()}, "s3cret-token"));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + kCallDeadline);
  v1::HostInfo info;
  const grpc::Status status = host().stub().GetHostInfo(&context, v1::GetHostInfoRequest(), &info);
  ASSERT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << ToString(status);
  const std::string token = ReasonTokenOf(status);
  EXPECT_FALSE(token.empty()) << "no [TOKEN] in " << ToString(status);
  EXPECT_EQ(TrailingReasonOf(context), token)
      << "the polyplug-reason trailer should repeat the token of " << ToString(status);
}

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

TEST_F(HostProcessTest, AuthTokenIsRequiredForServerReflection) {
  Copy("counter_v1");
  const fs::path token_file = scratch() / "token";
  WriteFile(token_file, "s3cret-token\n");
  ASSERT_NO_FATAL_FAILURE(StartHost({"--auth-token-file", token_file.string()}, "s3cret-token"));
  // "every RPC but health needs the token": reflection included.
  std::vector<std::string> services;
  grpc::Status status = ListServicesV1(host().channel(), "", &services);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED)
      << "v1 without a token: " << ToString(status) << ", listed " << services.size();
  services.clear();
  status = ListServicesV1Alpha(host().channel(), "", &services);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED)
      << "v1alpha without a token: " << ToString(status) << ", listed " << services.size();
  services.clear();
  status = ListServicesV1(host().channel(), "Bearer s3cret-token", &services);
  EXPECT_TRUE(status.ok()) << ToString(status);
  EXPECT_THAT(services, ::testing::Contains("polyplug.host.v1.PluginHost"));
  services.clear();
  status = ListServicesV1Alpha(host().channel(), "Bearer s3cret-token", &services);
  EXPECT_TRUE(status.ok()) << ToString(status);
  EXPECT_THAT(services, ::testing::Contains("polyplug.host.v1.PluginHost"));
}

// ---------------------------------------------------------------------------------------
// The token file

TEST_F(HostSecurityTest, EmptyAuthTokenFileIsExitCode2) {
  for (const std::string contents : {"", " \n\t\n"}) {
    SCOPED_TRACE(absl::StrCat("token file of ", contents.size(), " bytes"));
    const fs::path token_file = scratch() / absl::StrCat("token-", contents.size());
    WriteFile(token_file, contents);
    HostProcess host({"--auth-token-file", token_file.string()});
    ExpectStartRefused(host, {token_file.string(), "empty"});
  }
}

TEST_F(HostSecurityTest, MissingAuthTokenFileIsExitCode2) {
  const fs::path token_file = scratch() / "no-such-token";
  HostProcess host({"--auth-token-file", token_file.string()});
  ExpectStartRefused(host, {token_file.string()});
}

}  // namespace
}  // namespace polyplug::test
