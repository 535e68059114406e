// ReflectionService over a real in-process grpc::Server on a unix socket: both reflection
// versions, the files grpcurl needs, errors, and several requests on one stream.
#include "host/src/reflection_service.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/descriptor_database.h>
#include <grpcpp/grpcpp.h>
#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "grpc/reflection/v1/reflection.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "gtest/gtest.h"
#include "host/src/health_service.h"
#include "polyplug/host/v1/host.grpc.pb.h"

namespace polyplug::host {
namespace {

using ::testing::ElementsAre;
using ::testing::UnorderedElementsAre;

// Bounds how long a broken server can stall a test; never an expectation.
constexpr std::chrono::seconds kDeadline{30};

const std::vector<std::string> kServices = {"polyplug.host.v1.PluginHost", "grpc.health.v1.Health",
                                            "grpc.reflection.v1.ServerReflection",
                                            "grpc.reflection.v1alpha.ServerReflection"};

constexpr char kHostProto[] = "polyplug/host/v1/host.proto";
constexpr char kHealthProto[] = "grpc/health/v1/health.proto";

// The two reflection versions, for typed tests and the shared client helper.
struct V1 {
  using Service = grpc::reflection::v1::ServerReflection;
  using Request = grpc::reflection::v1::ServerReflectionRequest;
  using Response = grpc::reflection::v1::ServerReflectionResponse;
};
struct V1alpha {
  using Service = grpc::reflection::v1alpha::ServerReflection;
  using Request = grpc::reflection::v1alpha::ServerReflectionRequest;
  using Response = grpc::reflection::v1alpha::ServerReflectionResponse;
};

// A server with reflection (both versions) and health, on unix:<tmp>/r.sock.
class ReflectionServer {
 public:
  ReflectionServer() : reflection_(kServices) {
    // Only linked .pb.cc files are in the generated pool; the host binary links host.pb.cc
    // through PluginHostService, this test through this reference.
    EXPECT_EQ(v1::ReloadRequest::descriptor()->file()->name(), kHostProto);
    char dir_template[] = "/tmp/polyplug-reflection-XXXXXX";
    const char* made = mkdtemp(dir_template);
    EXPECT_NE(made, nullptr);
    dir_ = made == nullptr ? std::filesystem::path("/tmp") : std::filesystem::path(made);
    const std::string address = "unix:" + (dir_ / "r.sock").string();
    grpc::ServerBuilder builder;
    builder.AddListeningPort(address, grpc::InsecureServerCredentials());
    builder.RegisterService(reflection_.v1());
    builder.RegisterService(reflection_.v1alpha());
    builder.RegisterService(&health_);
    server_ = builder.BuildAndStart();
    EXPECT_NE(server_, nullptr);
    channel_ = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  }

  ~ReflectionServer() {
    if (server_ != nullptr) {
      server_->Shutdown(std::chrono::system_clock::now() + kDeadline);
      server_->Wait();
    }
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }

 private:
  HealthService health_;  // registered so that grpc.health.v1 is linked and describable
  ReflectionService reflection_;
  std::filesystem::path dir_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
};

std::unique_ptr<grpc::ClientContext> NewContext() {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + kDeadline);
  return context;
}

// One ServerReflectionInfo stream used in lockstep: Ask() writes a request and reads its
// answer. The destructor half-closes and expects the server to end the stream with OK.
template <typename Api>
class Stream {
 public:
  using Request = typename Api::Request;
  using Response = typename Api::Response;

  explicit Stream(const std::shared_ptr<grpc::Channel>& channel)
      : stub_(Api::Service::NewStub(channel)),
        context_(NewContext()),
        stream_(stub_->ServerReflectionInfo(context_.get())) {}

  ~Stream() {
    EXPECT_TRUE(stream_->WritesDone());
    Response extra;
    EXPECT_FALSE(stream_->Read(&extra)) << "unexpected response " << extra.DebugString();
    const grpc::Status status = stream_->Finish();
    EXPECT_TRUE(status.ok()) << status.error_code() << ": " << status.error_message();
  }

  Response Ask(const Request& request) {
    Response response;
    EXPECT_TRUE(stream_->Write(request));
    EXPECT_TRUE(stream_->Read(&response));
    return response;
  }

  Response ListServices() {
    Request request;
    request.set_list_services("*");
    return Ask(request);
  }
  Response FileContainingSymbol(const std::string& symbol) {
    Request request;
    request.set_file_containing_symbol(symbol);
    return Ask(request);
  }
  Response FileByFilename(const std::string& file) {
    Request request;
    request.set_file_by_filename(file);
    return Ask(request);
  }

  grpc::ClientReaderWriter<Request, Response>& raw() { return *stream_; }

 private:
  std::unique_ptr<typename Api::Service::Stub> stub_;
  std::unique_ptr<grpc::ClientContext> context_;
  std::unique_ptr<grpc::ClientReaderWriter<Request, Response>> stream_;
};

template <typename Response>
std::vector<std::string> ServiceNames(const Response& response) {
  std::vector<std::string> names;
  for (const auto& service : response.list_services_response().service()) {
    names.push_back(service.name());
  }
  return names;
}

// The files of a file_descriptor_response, parsed, in the order sent.
template <typename Response>
std::vector<google::protobuf::FileDescriptorProto> Files(const Response& response) {
  std::vector<google::protobuf::FileDescriptorProto> files;
  for (const std::string& bytes : response.file_descriptor_response().file_descriptor_proto()) {
    EXPECT_TRUE(files.emplace_back().ParseFromString(bytes));
  }
  return files;
}

std::vector<std::string> FileNames(
    const std::vector<google::protobuf::FileDescriptorProto>& files) {
  std::vector<std::string> names;
  for (const auto& file : files) names.push_back(file.name());
  return names;
}

// A client-side descriptor pool over what reflection returned, as grpcurl builds one.
class ClientPool {
 public:
  template <typename Response>
  void Add(const Response& response) {
    for (const auto& file : Files(response)) EXPECT_TRUE(database_.Add(file)) << file.name();
  }
  const google::protobuf::DescriptorPool& pool() { return pool_; }

 private:
  google::protobuf::SimpleDescriptorDatabase database_;
  google::protobuf::DescriptorPool pool_{&database_};
};

template <typename Api>
class ReflectionVersionTest : public ::testing::Test {
 protected:
  ReflectionServer server_;
};

using Versions = ::testing::Types<V1, V1alpha>;
class VersionNames {
 public:
  template <typename T>
  static std::string GetName(int) {
    return std::is_same_v<T, V1> ? "v1" : "v1alpha";
  }
};
TYPED_TEST_SUITE(ReflectionVersionTest, Versions, VersionNames);

TYPED_TEST(ReflectionVersionTest, ListsTheConfiguredServices) {
  Stream<TypeParam> stream(this->server_.channel());
  const auto response = stream.ListServices();
  ASSERT_FALSE(response.has_error_response()) << response.error_response().error_message();
  EXPECT_EQ(ServiceNames(response), kServices);
  EXPECT_EQ(response.original_request().list_services(), "*");
}

TYPED_TEST(ReflectionVersionTest, DescribesPluginHostWithItsImports) {
  Stream<TypeParam> stream(this->server_.channel());
  const auto response = stream.FileContainingSymbol("polyplug.host.v1.PluginHost");
  ASSERT_TRUE(response.has_file_descriptor_response()) << response.DebugString();
  const auto names = FileNames(Files(response));
  ASSERT_FALSE(names.empty());
  EXPECT_EQ(names.front(), kHostProto) << "the requested file comes first";
  EXPECT_THAT(names, UnorderedElementsAre(kHostProto, "google/protobuf/duration.proto",
                                          "google/protobuf/timestamp.proto"));

  ClientPool client;
  client.Add(response);
  const google::protobuf::ServiceDescriptor* service =
      client.pool().FindServiceByName("polyplug.host.v1.PluginHost");
  ASSERT_NE(service, nullptr);
  const google::protobuf::MethodDescriptor* reload = service->FindMethodByName("Reload");
  ASSERT_NE(reload, nullptr);
  EXPECT_EQ(reload->input_type()->full_name(), "polyplug.host.v1.ReloadRequest");
  EXPECT_EQ(reload->output_type()->full_name(), "polyplug.host.v1.ReloadResponse");
  const google::protobuf::MethodDescriptor* subscribe =
      service->FindMethodByName("SubscribeReloadPhases");
  ASSERT_NE(subscribe, nullptr);
  EXPECT_TRUE(subscribe->server_streaming());
}

// `grpcurl describe` prints the comments of host.proto, so reflection must carry them.
TYPED_TEST(ReflectionVersionTest, HostProtoComesWithItsComments) {
  Stream<TypeParam> stream(this->server_.channel());
  const auto response = stream.FileContainingSymbol("polyplug.host.v1.PluginHost");
  ClientPool client;
  client.Add(response);
  const google::protobuf::ServiceDescriptor* service =
      client.pool().FindServiceByName("polyplug.host.v1.PluginHost");
  ASSERT_NE(service, nullptr);
  google::protobuf::SourceLocation location;
  ASSERT_TRUE(service->GetSourceLocation(&location));
  EXPECT_THAT(location.leading_comments, testing::HasSubstr("Controls the bundles"));
  const google::protobuf::MethodDescriptor* reload = service->FindMethodByName("Reload");
  ASSERT_TRUE(reload->GetSourceLocation(&location));
  EXPECT_THAT(location.leading_comments, testing::HasSubstr("Hot-reloads one loaded bundle"));
}

TYPED_TEST(ReflectionVersionTest, DescribesHealth) {
  Stream<TypeParam> stream(this->server_.channel());
  const auto response = stream.FileContainingSymbol("grpc.health.v1.Health");
  ASSERT_TRUE(response.has_file_descriptor_response()) << response.DebugString();
  EXPECT_THAT(FileNames(Files(response)), ElementsAre(kHealthProto));
  ClientPool client;
  client.Add(response);
  const google::protobuf::ServiceDescriptor* health =
      client.pool().FindServiceByName("grpc.health.v1.Health");
  ASSERT_NE(health, nullptr);
  ASSERT_NE(health->FindMethodByName("Check"), nullptr);
  ASSERT_NE(health->FindMethodByName("Watch"), nullptr);
  EXPECT_TRUE(health->FindMethodByName("Watch")->server_streaming());
}

TYPED_TEST(ReflectionVersionTest, UnknownSymbolIsNotFound) {
  Stream<TypeParam> stream(this->server_.channel());
  const auto response = stream.FileContainingSymbol("polyplug.host.v1.NoSuchThing");
  ASSERT_TRUE(response.has_error_response()) << response.DebugString();
  EXPECT_EQ(response.error_response().error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(response.error_response().error_message(),
              ::testing::HasSubstr("polyplug.host.v1.NoSuchThing"));
  // The stream stays usable after an error.
  EXPECT_TRUE(stream.ListServices().has_list_services_response());
}

// Every kind of symbol grpcurl asks for resolves to its file.
TEST(ReflectionServiceTest, EveryKindOfSymbolFindsItsFile) {
  ReflectionServer server;
  Stream<V1> stream(server.channel());
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"polyplug.host.v1.PluginHost", kHostProto},                         // service
      {"polyplug.host.v1.PluginHost.Reload", kHostProto},                  // method
      {"polyplug.host.v1.ReloadRequest", kHostProto},                      // message
      {"polyplug.host.v1.ReloadRequest.name", kHostProto},                 // field in a oneof
      {"polyplug.host.v1.ReloadRequest.bundle", kHostProto},               // oneof
      {"polyplug.host.v1.Version.major", kHostProto},                      // field
      {"polyplug.host.v1.Phase", kHostProto},                              // enum
      {"polyplug.host.v1.PHASE_UNSPECIFIED", kHostProto},                  // enum value
      {"grpc.health.v1.HealthCheckResponse.ServingStatus", kHealthProto},  // nested enum
      {"grpc.health.v1.HealthCheckResponse.SERVING", kHealthProto},        // nested enum value
      {"grpc.reflection.v1.ServerReflectionRequest", "grpc/reflection/v1/reflection.proto"},
      {"google.protobuf.DescriptorProto.ExtensionRange",  // nested message
       "google/protobuf/descriptor.proto"},
  };
  for (const auto& [symbol, file] : cases) {
    const auto response = stream.FileContainingSymbol(symbol);
    ASSERT_TRUE(response.has_file_descriptor_response())
        << symbol << ": " << response.DebugString();
    const auto names = FileNames(Files(response));
    ASSERT_FALSE(names.empty()) << symbol;
    EXPECT_EQ(names.front(), file) << symbol;
  }
}

TEST(ReflectionServiceTest, FileByFilename) {
  ReflectionServer server;
  Stream<V1> stream(server.channel());
  const auto health = stream.FileByFilename(kHealthProto);
  EXPECT_THAT(FileNames(Files(health)), ElementsAre(kHealthProto));

  const auto missing = stream.FileByFilename("no/such/file.proto");
  ASSERT_TRUE(missing.has_error_response()) << missing.DebugString();
  EXPECT_EQ(missing.error_response().error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST(ReflectionServiceTest, EmptyRequestIsInvalidArgument) {
  ReflectionServer server;
  Stream<V1> stream(server.channel());
  V1::Request request;
  request.set_host("localhost");
  const auto response = stream.Ask(request);
  ASSERT_TRUE(response.has_error_response()) << response.DebugString();
  EXPECT_EQ(response.error_response().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(response.valid_host(), "localhost");
}

TEST(ReflectionServiceTest, Extensions) {
  ReflectionServer server;
  Stream<V1> stream(server.channel());
  V1::Request request;
  request.set_all_extension_numbers_of_type("polyplug.host.v1.Version");
  auto response = stream.Ask(request);
  ASSERT_TRUE(response.has_all_extension_numbers_response()) << response.DebugString();
  EXPECT_EQ(response.all_extension_numbers_response().base_type_name(), "polyplug.host.v1.Version");
  EXPECT_EQ(response.all_extension_numbers_response().extension_number_size(), 0);

  request.set_all_extension_numbers_of_type("no.such.Type");
  response = stream.Ask(request);
  ASSERT_TRUE(response.has_error_response()) << response.DebugString();
  EXPECT_EQ(response.error_response().error_code(), grpc::StatusCode::NOT_FOUND);

  request.mutable_file_containing_extension()->set_containing_type("google.protobuf.FieldOptions");
  request.mutable_file_containing_extension()->set_extension_number(987654);
  response = stream.Ask(request);
  ASSERT_TRUE(response.has_error_response()) << response.DebugString();
  EXPECT_EQ(response.error_response().error_code(), grpc::StatusCode::NOT_FOUND);
}

// Several requests on one stream: answered in order, imports sent once per stream, the
// requested file every time.
TEST(ReflectionServiceTest, SeveralRequestsOnOneStream) {
  ReflectionServer server;
  Stream<V1> stream(server.channel());
  EXPECT_EQ(ServiceNames(stream.ListServices()), kServices);

  const auto first = stream.FileContainingSymbol("polyplug.host.v1.PluginHost");
  EXPECT_THAT(FileNames(Files(first)), ElementsAre(kHostProto, "google/protobuf/duration.proto",
                                                   "google/protobuf/timestamp.proto"));
  const auto health = stream.FileContainingSymbol("grpc.health.v1.Health");
  EXPECT_THAT(FileNames(Files(health)), ElementsAre(kHealthProto));
  // Same file again: the file itself, but not the imports this stream already has.
  const auto again = stream.FileContainingSymbol("polyplug.host.v1.PluginHost.Reload");
  EXPECT_THAT(FileNames(Files(again)), ElementsAre(kHostProto));
  // An import asked for by name is sent, too.
  const auto duration = stream.FileByFilename("google/protobuf/duration.proto");
  EXPECT_THAT(FileNames(Files(duration)), ElementsAre("google/protobuf/duration.proto"));

  // A client building its pool from everything the stream sent can resolve all of it.
  ClientPool client;
  client.Add(first);
  client.Add(health);
  ASSERT_NE(client.pool().FindMethodByName("polyplug.host.v1.PluginHost.Reload"), nullptr);
  ASSERT_NE(client.pool().FindMethodByName("grpc.health.v1.Health.Watch"), nullptr);

  // A new stream starts over and sends the imports again.
  Stream<V1> other(server.channel());
  EXPECT_THAT(
      FileNames(Files(other.FileContainingSymbol("polyplug.host.v1.PluginHost"))),
      ElementsAre(kHostProto, "google/protobuf/duration.proto", "google/protobuf/timestamp.proto"));
}

// A client that writes many requests before reading anything gets every answer, in order
// (the server stops reading while its response queue is full and resumes as it drains).
TEST(ReflectionServiceTest, PipelinedRequestsAreAnsweredInOrder) {
  ReflectionServer server;
  constexpr int kRequests = 50;
  auto stub = V1::Service::NewStub(server.channel());
  auto context = NewContext();
  auto stream = stub->ServerReflectionInfo(context.get());
  for (int i = 0; i < kRequests; ++i) {
    V1::Request request;
    request.set_host("request-" + std::to_string(i));
    if (i % 2 == 0) {
      request.set_list_services("");
    } else {
      request.set_file_containing_symbol("grpc.health.v1.Health");
    }
    ASSERT_TRUE(stream->Write(request));
  }
  ASSERT_TRUE(stream->WritesDone());
  V1::Response response;
  int count = 0;
  while (stream->Read(&response)) {
    EXPECT_EQ(response.valid_host(), "request-" + std::to_string(count));
    EXPECT_EQ(response.original_request().host(), response.valid_host());
    if (count % 2 == 0) {
      EXPECT_EQ(ServiceNames(response), kServices);
    } else {
      EXPECT_THAT(FileNames(Files(response)), ElementsAre(kHealthProto));
    }
    ++count;
  }
  EXPECT_EQ(count, kRequests);
  const grpc::Status status = stream->Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();
}

// A client that goes away mid-stream does not leave the server stuck: shutdown completes.
TEST(ReflectionServiceTest, CancelledStreamIsCleanedUp) {
  ReflectionServer server;
  auto stub = V1::Service::NewStub(server.channel());
  auto context = NewContext();
  auto stream = stub->ServerReflectionInfo(context.get());
  V1::Request request;
  request.set_list_services("");
  ASSERT_TRUE(stream->Write(request));
  V1::Response response;
  ASSERT_TRUE(stream->Read(&response));
  context->TryCancel();
  EXPECT_FALSE(stream->Read(&response));
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  // ~ReflectionServer shuts the server down, which waits for every stream's OnDone.
}

}  // namespace
}  // namespace polyplug::host
