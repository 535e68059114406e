// HostCalls: typed PluginHost calls on a HostProcess for test fixtures, each with a fresh
// context (the token and a kCallDeadline deadline) and the reason trailer kept.
//
//   class MyTest : public ::testing::Test, public HostCalls {
//    protected:
//     HostProcess& host() override { return *host_; }
//   };
#ifndef POLYPLUG_TESTS_HOST_HOST_CALLS_H_
#define POLYPLUG_TESTS_HOST_HOST_CALLS_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "gtest/gtest.h"
#include "host/host_fixture.h"
#include "polyplug/host/v1/host.grpc.pb.h"

namespace polyplug::test {

// A unary call's outcome together with what the server put in the trailers.
template <typename Response>
struct CallResult {
  grpc::Status status;
  Response response;
  std::string trailing_reason;
};

// True when `text` contains `number` as a whole decimal word.
inline bool ContainsNumber(absl::string_view text, uint64_t number) {
  for (absl::string_view word : absl::StrSplit(text, absl::ByAnyChar(" ,;:()[]=\n\t"))) {
    uint64_t value = 0;
    if (absl::SimpleAtoi(word, &value) && value == number) return true;
  }
  return false;
}

class HostCalls {
 public:
  virtual ~HostCalls() = default;

 protected:
  // The host the calls go to (started).
  virtual HostProcess& host() = 0;

  template <typename Request, typename Response, typename Method>
  CallResult<Response> Call(Method method, const Request& request) {
    CallResult<Response> result;
    auto context = host().NewContext();
    result.status = (host().stub().*method)(context.get(), request, &result.response);
    result.trailing_reason = TrailingReasonOf(*context);
    return result;
  }

  CallResult<host::v1::ReloadResponse> Reload(const host::v1::ReloadRequest& request) {
    return Call<host::v1::ReloadRequest, host::v1::ReloadResponse>(
        &host::v1::PluginHost::Stub::Reload, request);
  }
  CallResult<host::v1::ReloadResponse> ReloadByName(const std::string& name) {
    host::v1::ReloadRequest request;
    request.set_name(name);
    return Reload(request);
  }
  CallResult<host::v1::ReloadResponse> ReloadByPath(const std::string& path) {
    host::v1::ReloadRequest request;
    request.set_path(path);
    return Reload(request);
  }
  // Reloads `name` and expects outcome RELOADED; returns the response.
  host::v1::ReloadResponse ReloadOk(const std::string& name) {
    auto result = ReloadByName(name);
    EXPECT_TRUE(result.status.ok()) << ToString(result.status);
    EXPECT_EQ(result.response.outcome(), host::v1::RELOAD_OUTCOME_RELOADED)
        << result.response.ShortDebugString();
    return result.response;
  }
  CallResult<host::v1::LoadBundleResponse> LoadBundle(const std::string& path) {
    host::v1::LoadBundleRequest request;
    request.set_path(path);
    return Call<host::v1::LoadBundleRequest, host::v1::LoadBundleResponse>(
        &host::v1::PluginHost::Stub::LoadBundle, request);
  }
  CallResult<host::v1::UnloadBundleResponse> UnloadBundle(const std::string& name, bool cascade) {
    host::v1::UnloadBundleRequest request;
    request.set_name(name);
    request.set_cascade(cascade);
    return Call<host::v1::UnloadBundleRequest, host::v1::UnloadBundleResponse>(
        &host::v1::PluginHost::Stub::UnloadBundle, request);
  }
  CallResult<host::v1::ContractHandle> FindContract(const host::v1::FindContractRequest& request) {
    return Call<host::v1::FindContractRequest, host::v1::ContractHandle>(
        &host::v1::PluginHost::Stub::FindContract, request);
  }
  CallResult<host::v1::ContractHandle> FindContract(const std::string& name) {
    host::v1::FindContractRequest request;
    request.set_name(name);
    return FindContract(request);
  }
  CallResult<host::v1::InvokeResponse> Invoke(const host::v1::InvokeRequest& request) {
    return Call<host::v1::InvokeRequest, host::v1::InvokeResponse>(
        &host::v1::PluginHost::Stub::Invoke, request);
  }
  // A one-shot call of `method` on the provider of `contract`.
  CallResult<host::v1::InvokeResponse> Invoke(const std::string& contract,
                                              const std::string& method,
                                              const std::string& data = "") {
    host::v1::InvokeRequest request;
    request.set_contract(contract);
    request.set_method(method);
    request.set_request(data);
    return Invoke(request);
  }
  host::v1::ListBundlesResponse ListBundles() {
    auto result = Call<host::v1::ListBundlesRequest, host::v1::ListBundlesResponse>(
        &host::v1::PluginHost::Stub::ListBundles, host::v1::ListBundlesRequest());
    EXPECT_TRUE(result.status.ok()) << ToString(result.status);
    return result.response;
  }
  CallResult<host::v1::ListContractsResponse> ListContracts(const std::string& bundle = "") {
    host::v1::ListContractsRequest request;
    request.set_bundle(bundle);
    return Call<host::v1::ListContractsRequest, host::v1::ListContractsResponse>(
        &host::v1::PluginHost::Stub::ListContracts, request);
  }
  host::v1::HostInfo HostInfo() {
    auto result = Call<host::v1::GetHostInfoRequest, host::v1::HostInfo>(
        &host::v1::PluginHost::Stub::GetHostInfo, host::v1::GetHostInfoRequest());
    EXPECT_TRUE(result.status.ok()) << ToString(result.status);
    return result.response;
  }

  // A stream on the main channel.
  std::unique_ptr<Subscription> Subscribe(const host::v1::SubscribeReloadPhasesRequest& request) {
    return std::make_unique<Subscription>(host().stub(), request, host().NewContext());
  }
  // A stream on the main channel (or `stub`) that starts with a snapshot, read through its
  // end marker, so that the host has registered it before the test goes on. nullptr (and a
  // failure) when the snapshot never ends.
  std::unique_ptr<Subscription> SubscribeSynced(host::v1::SubscribeReloadPhasesRequest request = {},
                                                host::v1::PluginHost::Stub* stub = nullptr) {
    request.set_include_snapshot(true);
    auto sub = std::make_unique<Subscription>(stub != nullptr ? *stub : host().stub(), request,
                                              host().NewContext());
    if (!sub->ReadSnapshot()) {
      ADD_FAILURE() << "the snapshot did not end with SNAPSHOT_END: " << ToString(sub->Finish());
      return nullptr;
    }
    return sub;
  }

  // Asks GetHostInfo until the host counts `n` open subscribers: the host frees a stream
  // after the client saw it end, and nothing on the wire tells when.
  bool WaitForSubscriberCount(uint32_t n) {
    const auto deadline = std::chrono::system_clock::now() + kCallDeadline;
    while (std::chrono::system_clock::now() < deadline) {
      if (HostInfo().subscriber_count() == n) return true;
    }
    return false;
  }
};

}  // namespace polyplug::test

#endif  // POLYPLUG_TESTS_HOST_HOST_CALLS_H_
