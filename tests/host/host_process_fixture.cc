#include "host/host_process_fixture.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_split.h"

namespace polyplug::test {

namespace fs = std::filesystem;
namespace v1 = ::polyplug::host::v1;

void HostProcessTest::SetUp() { fs::create_directories(root_); }

fs::path HostProcessTest::Copy(absl::string_view target) { return CopyTestBundle(target, root_); }

void HostProcessTest::StartHost(std::vector<std::string> extra, std::string token) {
  std::vector<std::string> args = {"--bundles", root_.string()};
  args.insert(args.end(), extra.begin(), extra.end());
  host_ = std::make_unique<HostProcess>(std::move(args), std::move(token));
  const absl::Status started = host_->Start();
  ASSERT_TRUE(started.ok()) << started;
}

const v1::Bundle* FindBundle(const v1::ListBundlesResponse& list, absl::string_view name) {
  for (const v1::Bundle& b : list.bundles()) {
    if (b.name() == name) return &b;
  }
  return nullptr;
}

std::vector<std::string> BundleNames(const v1::ListBundlesResponse& list) {
  std::vector<std::string> names;
  for (const v1::Bundle& b : list.bundles()) names.push_back(b.name());
  return names;
}

bool HasLogLine(absl::string_view log, std::vector<absl::string_view> needles) {
  for (absl::string_view line : absl::StrSplit(log, '\n')) {
    if (std::all_of(needles.begin(), needles.end(),
                    [line](absl::string_view n) { return ContainsIgnoreCase(line, n); })) {
      return true;
    }
  }
  return false;
}

void ExpectSameEvents(const std::vector<v1::ReloadPhaseEvent>& actual,
                      const std::vector<v1::ReloadPhaseEvent>& expected) {
  EXPECT_EQ(Describe(actual), Describe(expected));
  EXPECT_EQ(SeqsOf(actual), SeqsOf(expected));
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < actual.size(); ++i) {
    EXPECT_THAT(actual[i], ProtoEq(expected[i])) << "event " << i;
  }
}

std::vector<v1::ReloadPhaseEvent> EventsOf(const v1::ReloadResponse& response) {
  return {response.events().begin(), response.events().end()};
}

grpc::Status HealthCheck(const std::shared_ptr<grpc::Channel>& channel, const std::string& service,
                         grpc::health::v1::HealthCheckResponse* response) {
  auto health = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + kCallDeadline);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  return health->Check(&context, request, response);
}

}  // namespace polyplug::test
