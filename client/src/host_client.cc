#include "polyplug/client/host_client.h"

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "src/connection.h"
#include "src/contract_tracking.h"
#include "wire/wire.h"

namespace polyplug::client {
namespace v1 = host::v1;

namespace internal {

void Connection::PrepareStream(grpc::ClientContext& context) const {
  if (!options.auth_token.empty()) {
    context.AddMetadata("authorization", absl::StrCat("Bearer ", options.auth_token));
  }
}

void Connection::PrepareCall(grpc::ClientContext& context, const CallOptions& call) const {
  PrepareStream(context);
  const absl::Duration timeout =
      call.timeout > absl::ZeroDuration() ? call.timeout : options.call_timeout;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  context.set_wait_for_ready(call.wait_for_ready);
}

namespace {

// The "[TOKEN]" a host error message starts with, or "".
absl::string_view TokenInMessage(absl::string_view message) {
  if (!absl::ConsumePrefix(&message, "[")) return "";
  const size_t end = message.find(']');
  if (end == absl::string_view::npos) return "";
  return message.substr(0, end);
}

}  // namespace

absl::Status Connection::ToStatus(const grpc::Status& status, const grpc::ClientContext& context,
                                  absl::Duration timeout) const {
  if (status.ok()) return absl::OkStatus();
  const auto code = static_cast<absl::StatusCode>(status.error_code());
  std::string token;
  const auto& trailers = context.GetServerTrailingMetadata();
  if (auto it = trailers.find(wire::kReasonTrailer); it != trailers.end()) {
    token.assign(it->second.data(), it->second.size());
  } else {
    token = std::string(TokenInMessage(status.error_message()));
  }
  std::string message = status.error_message();
  if (token.empty()) {
    // Not the host's own error: the transport's. Say which host.
    switch (status.error_code()) {
      case grpc::StatusCode::UNAVAILABLE:
        message = absl::StrCat("cannot reach polyplug-host at ", target, ": ", message);
        break;
      case grpc::StatusCode::DEADLINE_EXCEEDED:
        message = absl::StrCat("polyplug-host at ", target, " did not answer within ",
                               absl::FormatDuration(timeout), ": ", message);
        break;
      case grpc::StatusCode::UNAUTHENTICATED:
        message = absl::StrCat("polyplug-host at ", target, " refused the credentials: ", message);
        break;
      default:
        break;
    }
  }
  absl::Status out(code, message);
  if (!token.empty()) out.SetPayload(kReasonPayloadUrl, absl::Cord(token));
  return out;
}

}  // namespace internal

absl::string_view ServingStatusName(ServingStatus status) {
  switch (status) {
    case ServingStatus::kUnknown:
      return "UNKNOWN";
    case ServingStatus::kServing:
      return "SERVING";
    case ServingStatus::kNotServing:
      return "NOT_SERVING";
    case ServingStatus::kServiceUnknown:
      return "SERVICE_UNKNOWN";
  }
  return "UNKNOWN";
}

v1::FailureReason FailureReasonOf(const absl::Status& status) {
  if (status.ok()) return v1::FAILURE_REASON_UNSPECIFIED;
  std::string token;
  if (auto payload = status.GetPayload(internal::kReasonPayloadUrl)) {
    token = std::string(*payload);
  } else {
    absl::string_view message = status.message();
    if (absl::ConsumePrefix(&message, "[")) {
      token = std::string(message.substr(0, message.find(']')));
    }
  }
  return wire::ReasonOfToken(token);
}

std::string DefaultHostTarget() { return wire::DefaultHostAddress(); }

class HostClient::Impl {
 public:
  explicit Impl(std::shared_ptr<internal::Connection> connection)
      : connection_(std::move(connection)) {}

  const internal::Connection& connection() const { return *connection_; }
  const std::shared_ptr<internal::Connection>& shared_connection() const { return connection_; }

  // Calls `method` on the stub with a prepared context; the reply or the mapped error.
  template <typename Response, typename Request, typename Method>
  absl::StatusOr<Response> Call(Method method, const Request& request, const CallOptions& call) {
    return internal::CallUnary<Response>(*connection_, method, request, call);
  }

  std::shared_ptr<internal::ContractTracking> tracking() {
    std::lock_guard<std::mutex> lock(mu_);
    if (!tracking_) tracking_ = internal::ContractTracking::Start(connection_);
    return tracking_;
  }

 private:
  std::shared_ptr<internal::Connection> connection_;
  std::mutex mu_;
  std::shared_ptr<internal::ContractTracking> tracking_;
};

absl::StatusOr<std::unique_ptr<HostClient>> HostClient::Connect(absl::string_view target_in,
                                                                ConnectOptions options) {
  std::string target(absl::StripAsciiWhitespace(target_in));
  if (target.empty()) {
    return absl::InvalidArgumentError(
        "empty host target; expected unix:PATH, HOST:PORT or an absolute socket path");
  }
  if (target[0] == '/') target = absl::StrCat("unix:", target);
  const bool is_unix =
      absl::StartsWith(target, "unix:") || absl::StartsWith(target, "unix-abstract:");
  if (is_unix && (target == "unix:" || target == "unix://")) {
    return absl::InvalidArgumentError(
        absl::StrCat("host target '", target, "' names no socket path"));
  }
  if (!is_unix && target.find(':') == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("host target '", target,
                     "' is neither unix:PATH nor HOST:PORT (no port given); e.g. 127.0.0.1:50051"));
  }
  if (options.tls_client_cert_pem.empty() != options.tls_client_key_pem.empty()) {
    return absl::InvalidArgumentError(
        "a TLS client certificate needs its key and the key its certificate");
  }
  if (!options.tls && (!options.tls_root_certs_pem.empty() ||
                       !options.tls_client_cert_pem.empty() || !options.tls_server_name.empty())) {
    return absl::InvalidArgumentError("TLS options are set but ConnectOptions::tls is false");
  }
  if (options.call_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("ConnectOptions::call_timeout must be positive");
  }
  if (options.reconnect_initial_backoff <= absl::ZeroDuration() ||
      options.reconnect_max_backoff < options.reconnect_initial_backoff) {
    return absl::InvalidArgumentError(
        "reconnect backoff: initial must be positive and not above max");
  }

  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  grpc::ChannelArguments args;
  if (options.tls) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = options.tls_root_certs_pem;
    ssl.pem_cert_chain = options.tls_client_cert_pem;
    ssl.pem_private_key = options.tls_client_key_pem;
    credentials = grpc::SslCredentials(ssl);
    if (!options.tls_server_name.empty()) args.SetSslTargetNameOverride(options.tls_server_name);
  }
  args.SetMaxReceiveMessageSize(options.max_message_bytes);
  // A subscription notices a dead host (e.g. a vanished TCP peer) within ~40 s; the host
  // accepts pings every 10 s.
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30'000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10'000);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // gRPC 1.51's pick_first stays in TRANSIENT_FAILURE after a failed connect until some
  // later event (observed: ~10 s), failing every call meanwhile with the stale error even
  // though the host is back; round_robin reconnects as soon as its backoff elapses. With a
  // single address the two are otherwise the same.
  args.SetLoadBalancingPolicyName("round_robin");
  // Reconnect quickly after a host restart: the subscription has its own backoff.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
              static_cast<int>(absl::ToInt64Milliseconds(options.reconnect_initial_backoff)));
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
              static_cast<int>(absl::ToInt64Milliseconds(options.reconnect_max_backoff)));

  auto connection = std::make_shared<internal::Connection>();
  connection->target = target;
  connection->options = std::move(options);
  connection->channel = grpc::CreateCustomChannel(target, credentials, args);
  if (connection->channel == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("cannot create a channel to '", target, "'"));
  }
  connection->stub = v1::PluginHost::NewStub(connection->channel);
  connection->health = grpc::health::v1::Health::NewStub(connection->channel);
  connection->session = std::make_unique<internal::Session>(*connection);
  return std::unique_ptr<HostClient>(new HostClient(std::make_unique<Impl>(std::move(connection))));
}

HostClient::HostClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HostClient::~HostClient() = default;

std::shared_ptr<const internal::Connection> HostClient::connection() const {
  return impl_->shared_connection();
}

const std::string& HostClient::target() const { return impl_->connection().target; }

absl::StatusOr<v1::ReloadResponse> HostClient::Reload(absl::string_view bundle,
                                                      const CallOptions& call) {
  return Reload(bundle, "", call);
}

absl::StatusOr<v1::ReloadResponse> HostClient::Reload(absl::string_view bundle,
                                                      absl::string_view expected_sha256,
                                                      const CallOptions& call) {
  v1::ReloadRequest request;
  request.set_expected_sha256(std::string(expected_sha256));
  if (absl::StrContains(bundle, '/')) {
    request.set_path(std::string(bundle));
  } else {
    request.set_name(std::string(bundle));
  }
  request.set_request_id(call.request_id);
  return impl_->Call<v1::ReloadResponse>(&v1::PluginHost::Stub::Reload, request, call);
}

absl::StatusOr<v1::LoadBundleResponse> HostClient::LoadBundle(absl::string_view path,
                                                              const CallOptions& call) {
  v1::LoadBundleRequest request;
  request.set_path(std::string(path));
  request.set_request_id(call.request_id);
  return impl_->Call<v1::LoadBundleResponse>(&v1::PluginHost::Stub::LoadBundle, request, call);
}

absl::StatusOr<v1::UnloadBundleResponse> HostClient::UnloadBundle(absl::string_view name,
                                                                  bool cascade,
                                                                  const CallOptions& call) {
  v1::UnloadBundleRequest request;
  request.set_name(std::string(name));
  request.set_cascade(cascade);
  request.set_request_id(call.request_id);
  return impl_->Call<v1::UnloadBundleResponse>(&v1::PluginHost::Stub::UnloadBundle, request, call);
}

absl::StatusOr<v1::Operation> HostClient::GetOperation(absl::string_view request_id, bool wait,
                                                       const CallOptions& call) {
  v1::GetOperationRequest request;
  request.set_request_id(std::string(request_id));
  request.set_wait(wait);
  return impl_->Call<v1::Operation>(&v1::PluginHost::Stub::GetOperation, request, call);
}

absl::StatusOr<v1::ContractHandle> HostClient::FindContract(absl::string_view contract,
                                                            uint32_t min_version,
                                                            const CallOptions& call) {
  v1::FindContractRequest request;
  request.set_name(std::string(contract));
  request.set_min_version(min_version);
  return impl_->Call<v1::ContractHandle>(&v1::PluginHost::Stub::FindContract, request, call);
}

absl::StatusOr<v1::ListBundlesResponse> HostClient::ListBundles(const CallOptions& call) {
  return impl_->Call<v1::ListBundlesResponse>(&v1::PluginHost::Stub::ListBundles,
                                              v1::ListBundlesRequest(), call);
}

absl::StatusOr<v1::ListContractsResponse> HostClient::ListContracts(absl::string_view bundle,
                                                                    const CallOptions& call) {
  v1::ListContractsRequest request;
  request.set_bundle(std::string(bundle));
  return impl_->Call<v1::ListContractsResponse>(&v1::PluginHost::Stub::ListContracts, request,
                                                call);
}

absl::StatusOr<v1::HostInfo> HostClient::GetHostInfo(const CallOptions& call) {
  return impl_->Call<v1::HostInfo>(&v1::PluginHost::Stub::GetHostInfo, v1::GetHostInfoRequest(),
                                   call);
}

absl::StatusOr<std::string> HostClient::Echo(absl::string_view payload, const CallOptions& call) {
  v1::EchoRequest request;
  request.set_payload(std::string(payload));
  auto response = impl_->Call<v1::EchoResponse>(&v1::PluginHost::Stub::Echo, request, call);
  if (!response.ok()) return response.status();
  return std::move(*response->mutable_payload());
}

absl::StatusOr<ServingStatus> HostClient::CheckHealth(absl::string_view service,
                                                      const CallOptions& call) {
  const internal::Connection& connection = impl_->connection();
  grpc::ClientContext context;
  connection.PrepareCall(context, call);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(std::string(service));
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status status = connection.health->Check(&context, request, &response);
  if (status.error_code() == grpc::StatusCode::NOT_FOUND) return ServingStatus::kServiceUnknown;
  if (!status.ok()) {
    return connection.ToStatus(
        status, context,
        call.timeout > absl::ZeroDuration() ? call.timeout : connection.options.call_timeout);
  }
  switch (response.status()) {
    case grpc::health::v1::HealthCheckResponse::SERVING:
      return ServingStatus::kServing;
    case grpc::health::v1::HealthCheckResponse::NOT_SERVING:
      return ServingStatus::kNotServing;
    case grpc::health::v1::HealthCheckResponse::SERVICE_UNKNOWN:
      return ServingStatus::kServiceUnknown;
    default:
      return ServingStatus::kUnknown;
  }
}

absl::StatusOr<v1::InstanceRef> HostClient::CreateInstance(absl::string_view contract,
                                                           absl::string_view args,
                                                           uint32_t min_version,
                                                           const CallOptions& call) {
  v1::CreateInstanceRequest request;
  request.set_contract(std::string(contract));
  request.set_min_version(min_version);
  request.set_args(std::string(args));
  return internal::CreateLeasedInstance(impl_->connection(), std::move(request), call);
}

absl::StatusOr<v1::InstanceRef> HostClient::CreateInstance(const v1::ContractHandle& handle,
                                                           absl::string_view args,
                                                           const CallOptions& call) {
  v1::CreateInstanceRequest request;
  *request.mutable_handle() = handle;
  request.set_args(std::string(args));
  return internal::CreateLeasedInstance(impl_->connection(), std::move(request), call);
}

absl::StatusOr<v1::InvokeResponse> HostClient::Invoke(const v1::InstanceRef& instance,
                                                      absl::string_view method,
                                                      absl::string_view request_bytes,
                                                      const CallOptions& call) {
  v1::InvokeRequest request;
  *request.mutable_instance() = instance;
  request.set_method(std::string(method));
  request.set_request(std::string(request_bytes));
  return impl_->Call<v1::InvokeResponse>(&v1::PluginHost::Stub::Invoke, request, call);
}

absl::StatusOr<v1::InvokeResponse> HostClient::InvokeOnce(absl::string_view contract,
                                                          absl::string_view method,
                                                          absl::string_view request_bytes,
                                                          uint32_t min_version,
                                                          const CallOptions& call) {
  v1::InvokeRequest request;
  request.set_contract(std::string(contract));
  request.set_min_version(min_version);
  request.set_method(std::string(method));
  request.set_request(std::string(request_bytes));
  return impl_->Call<v1::InvokeResponse>(&v1::PluginHost::Stub::Invoke, request, call);
}

absl::Status HostClient::DestroyInstance(const v1::InstanceRef& instance, const CallOptions& call) {
  v1::DestroyInstanceRequest request;
  *request.mutable_instance() = instance;
  return impl_
      ->Call<v1::DestroyInstanceResponse>(&v1::PluginHost::Stub::DestroyInstance, request, call)
      .status();
}

std::unique_ptr<Subscription> HostClient::Subscribe(PhaseHandlers handlers,
                                                    SubscribeOptions options) {
  return std::unique_ptr<Subscription>(
      new Subscription(impl_->shared_connection(), std::move(handlers), std::move(options)));
}

std::unique_ptr<TrackedContract> HostClient::TrackContract(absl::string_view contract,
                                                           uint32_t min_version,
                                                           RefreshCallback on_refreshed) {
  std::shared_ptr<internal::ContractTracking> tracking = impl_->tracking();
  std::shared_ptr<TrackedContract::State> state =
      tracking->Add(contract, min_version, std::move(on_refreshed));
  state->tracking = std::move(tracking);  // trackers keep the tracking running
  return std::unique_ptr<TrackedContract>(new TrackedContract(std::move(state)));
}

}  // namespace polyplug::client
