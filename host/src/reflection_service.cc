#include "host/src/reflection_service.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "grpc/reflection/v1/reflection.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"

// host.proto's FileDescriptorSet with source info (proto/CMakeLists.txt embeds it).
extern const unsigned char polyplug_host_descriptor_set[];
extern const std::size_t polyplug_host_descriptor_set_size;

namespace polyplug::host {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::DescriptorPool;
using google::protobuf::FieldDescriptor;
using google::protobuf::FileDescriptor;
using google::protobuf::FileDescriptorProto;

// Responses a stream may hold (the one being written included) before it stops reading
// requests. A client that pipelines requests without reading the answers is then held back
// by gRPC flow control instead of growing server memory.
constexpr size_t kMaxQueuedResponses = 8;

template <typename Response>
void SetError(grpc::StatusCode code, std::string message, Response& response) {
  auto* error = response.mutable_error_response();
  error->set_error_code(static_cast<int32_t>(code));
  error->set_error_message(std::move(message));
}

// The project's own files as protoc saw them, comments included, so that `grpcurl describe`
// shows them. Null for other files (the generated pool has no comments to offer).
const std::string* DocumentedFile(const std::string& name) {
  static const auto* files = [] {
    auto* map = new std::unordered_map<std::string, std::string>();
    google::protobuf::FileDescriptorSet set;
    if (set.ParseFromArray(polyplug_host_descriptor_set,
                           static_cast<int>(polyplug_host_descriptor_set_size))) {
      for (const FileDescriptorProto& file : set.file())
        (*map)[file.name()] = file.SerializeAsString();
    }
    return map;
  }();
  auto it = files->find(name);
  return it == files->end() ? nullptr : &it->second;
}

// Appends `requested` and then its transitive imports (breadth first) as serialized
// FileDescriptorProtos. `requested` is always sent; an import only if `sent_files` (the
// names sent on this stream so far) does not hold it yet. Imports follow their importer,
// so a client adding them in reverse order sees every dependency first; clients that go
// through a descriptor database (grpcurl, protoreflect) do not care about the order.
template <typename Response>
void AddFileWithImports(const FileDescriptor* requested,
                        std::unordered_set<std::string>& sent_files, Response& response) {
  auto* out = response.mutable_file_descriptor_response()->mutable_file_descriptor_proto();
  sent_files.insert(requested->name());
  std::vector<const FileDescriptor*> queue = {requested};
  for (size_t i = 0; i < queue.size(); ++i) {
    const FileDescriptor* file = queue[i];
    if (const std::string* documented = DocumentedFile(file->name())) {
      *out->Add() = *documented;
    } else {
      FileDescriptorProto proto;
      file->CopyTo(&proto);
      proto.SerializeToString(out->Add());
    }
    for (int d = 0; d < file->dependency_count(); ++d) {
      const FileDescriptor* import = file->dependency(d);
      if (sent_files.insert(import->name()).second) queue.push_back(import);
    }
  }
}

// Answers one request; identical for v1 and v1alpha. CPU only: generated_pool() builds
// descriptors lazily under its own mutex but never does I/O, so this is safe in a reaction.
template <typename Request, typename Response>
void Answer(const std::vector<std::string>& services, const Request& request,
            std::unordered_set<std::string>& sent_files, Response& response) {
  response.set_valid_host(request.host());
  *response.mutable_original_request() = request;
  const DescriptorPool* pool = DescriptorPool::generated_pool();
  switch (request.message_request_case()) {
    case Request::kListServices: {
      auto* list = response.mutable_list_services_response();
      for (const std::string& name : services) list->add_service()->set_name(name);
      return;
    }
    case Request::kFileByFilename: {
      const FileDescriptor* file = pool->FindFileByName(request.file_by_filename());
      if (file == nullptr) {
        SetError(grpc::StatusCode::NOT_FOUND, "file not found: " + request.file_by_filename(),
                 response);
      } else {
        AddFileWithImports(file, sent_files, response);
      }
      return;
    }
    case Request::kFileContainingSymbol: {
      // FindFileContainingSymbol knows every kind of symbol: packages' top-level types,
      // nested types, fields, oneofs, enum values, services, methods and extensions.
      const FileDescriptor* file = pool->FindFileContainingSymbol(request.file_containing_symbol());
      if (file == nullptr) {
        SetError(grpc::StatusCode::NOT_FOUND,
                 "symbol not found: " + request.file_containing_symbol(), response);
      } else {
        AddFileWithImports(file, sent_files, response);
      }
      return;
    }
    case Request::kFileContainingExtension: {
      const auto& wanted = request.file_containing_extension();
      const Descriptor* type = pool->FindMessageTypeByName(wanted.containing_type());
      const FieldDescriptor* extension =
          type == nullptr ? nullptr : pool->FindExtensionByNumber(type, wanted.extension_number());
      if (type == nullptr) {
        SetError(grpc::StatusCode::NOT_FOUND, "message type not found: " + wanted.containing_type(),
                 response);
      } else if (extension == nullptr) {
        SetError(grpc::StatusCode::NOT_FOUND,
                 "extension " + std::to_string(wanted.extension_number()) + " of " +
                     wanted.containing_type() + " not found",
                 response);
      } else {
        AddFileWithImports(extension->file(), sent_files, response);
      }
      return;
    }
    case Request::kAllExtensionNumbersOfType: {
      const Descriptor* type = pool->FindMessageTypeByName(request.all_extension_numbers_of_type());
      if (type == nullptr) {
        SetError(grpc::StatusCode::NOT_FOUND,
                 "message type not found: " + request.all_extension_numbers_of_type(), response);
        return;
      }
      std::vector<const FieldDescriptor*> extensions;
      pool->FindAllExtensions(type, &extensions);
      std::vector<int32_t> numbers;
      numbers.reserve(extensions.size());
      for (const FieldDescriptor* extension : extensions) numbers.push_back(extension->number());
      std::sort(numbers.begin(), numbers.end());  // deterministic answers
      auto* out = response.mutable_all_extension_numbers_response();
      out->set_base_type_name(type->full_name());
      for (int32_t number : numbers) out->add_extension_number(number);
      return;
    }
    case Request::MESSAGE_REQUEST_NOT_SET:
      break;
  }
  // Also reached by a message_request added to the proto after this build (it parses as
  // an unknown field, so the case is NOT_SET).
  SetError(grpc::StatusCode::INVALID_ARGUMENT, "the request sets no message_request", response);
}

// One ServerReflectionInfo stream. Reads one request at a time, answers it in the reaction
// (CPU only) and queues the response; writes one response at a time, in request order.
// Finishes with OK once the client half-closed and every response was written, or with
// CANCELLED when the call broke. Deletes itself in OnDone.
//
// Locking: mu_ guards all state. StartRead/StartWrite are called with mu_ held; gRPC never
// runs a reaction inline from them (1.51 creates the read and write tags with
// can_inline=false). Finish is called after mu_ is released, as the last thing a
// reaction does, so even an OnDone run inline could neither deadlock on mu_ nor be followed
// by a touch of the deleted reactor. OnDone cannot race a reaction: each reaction holds a
// reference on the call until it returns.
template <typename Request, typename Response>
class InfoReactor final : public grpc::ServerBidiReactor<Request, Response> {
 public:
  explicit InfoReactor(const std::vector<std::string>& services) : services_(services) {
    std::lock_guard<std::mutex> lock(mu_);
    MaybeReadLocked();
  }

  void OnReadDone(bool ok) override {
    std::optional<grpc::Status> finish;
    {
      // The answer is built under mu_ too: it is CPU only, the only contender is this
      // stream's OnWriteDone, and it keeps every access to the reactor ordered by mu_, which
      // ThreadSanitizer can check (it cannot see the ordering gRPC itself provides between
      // successive reads).
      std::lock_guard<std::mutex> lock(mu_);
      reading_ = false;
      if (finished_) return;
      if (ok) {
        // std::deque::emplace_back keeps references valid: front(), the response being
        // written, does not move.
        Answer(services_, request_, sent_files_, queue_.emplace_back());
        request_.Clear();
        MaybeWriteLocked();
        MaybeReadLocked();
      } else {  // half-close by the client, or the call broke
        read_closed_ = true;
        finish = MaybeFinishLocked();
      }
    }
    if (finish.has_value()) this->Finish(*std::move(finish));
  }

  void OnWriteDone(bool ok) override {
    std::optional<grpc::Status> finish;
    {
      std::lock_guard<std::mutex> lock(mu_);
      writing_ = false;
      queue_.pop_front();
      if (ok) {
        MaybeWriteLocked();
        MaybeReadLocked();
        finish = MaybeFinishLocked();
      } else {  // the call is gone; no later write can succeed
        finish = FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "write failed"));
      }
    }
    if (finish.has_value()) this->Finish(*std::move(finish));
  }

  void OnCancel() override {
    std::optional<grpc::Status> finish;
    {
      std::lock_guard<std::mutex> lock(mu_);
      finish = FinishLocked(grpc::Status::CANCELLED);
    }
    if (finish.has_value()) this->Finish(*std::move(finish));
  }

  // Taking mu_ orders the destruction after every earlier reaction's critical section in a
  // way ThreadSanitizer can see (it cannot see gRPC's own synchronization in Debian's
  // uninstrumented libgrpc).
  void OnDone() override {
    { std::lock_guard<std::mutex> lock(mu_); }
    delete this;
  }

 private:
  void MaybeReadLocked() {
    if (reading_ || read_closed_ || finished_ || queue_.size() >= kMaxQueuedResponses) return;
    reading_ = true;
    this->StartRead(&request_);
  }

  // At most one write in flight: gRPC holds a single write op per stream.
  void MaybeWriteLocked() {
    if (writing_ || finished_ || queue_.empty()) return;
    writing_ = true;
    this->StartWrite(&queue_.front());
  }

  std::optional<grpc::Status> MaybeFinishLocked() {
    if (!read_closed_ || writing_ || !queue_.empty()) return std::nullopt;
    return FinishLocked(grpc::Status::OK);
  }

  // Every RPC is finished exactly once, cancelled ones included: returns the status to pass
  // to Finish (after releasing mu_), or nullopt when the stream was finished already.
  std::optional<grpc::Status> FinishLocked(grpc::Status status) {
    if (finished_) return std::nullopt;
    finished_ = true;
    return status;
  }

  const std::vector<std::string>& services_;
  std::mutex mu_;
  Request request_;                             // target of the read in flight
  std::unordered_set<std::string> sent_files_;  // files sent on this stream
  std::deque<Response> queue_;                  // front() is being written while writing_
  bool reading_ = false;
  bool read_closed_ = false;
  bool writing_ = false;
  bool finished_ = false;
};

// The generated callback service of one reflection version, answering with InfoReactor.
// A stream refused before it starts (the caller is not authorized).
template <typename Request, typename Response>
class RefusedReactor final : public grpc::ServerBidiReactor<Request, Response> {
 public:
  explicit RefusedReactor(const grpc::Status& status) { this->Finish(status); }
  void OnDone() override { delete this; }
};

template <typename Generated, typename Request, typename Response>
class InfoService final : public Generated::CallbackService {
 public:
  InfoService(const std::vector<std::string>& services,
              const ReflectionService::Authorizer& authorize)
      : services_(services), authorize_(authorize) {}

  grpc::ServerBidiReactor<Request, Response>* ServerReflectionInfo(
      grpc::CallbackServerContext* context) override {
    if (authorize_) {
      if (grpc::Status status = authorize_(context); !status.ok()) {
        return new RefusedReactor<Request, Response>(status);
      }
    }
    return new InfoReactor<Request, Response>(services_);
  }

 private:
  const std::vector<std::string>& services_;
  const ReflectionService::Authorizer& authorize_;
};

namespace rv1 = grpc::reflection::v1;
namespace rv1alpha = grpc::reflection::v1alpha;
using V1Service =
    InfoService<rv1::ServerReflection, rv1::ServerReflectionRequest, rv1::ServerReflectionResponse>;
using V1alphaService = InfoService<rv1alpha::ServerReflection, rv1alpha::ServerReflectionRequest,
                                   rv1alpha::ServerReflectionResponse>;

}  // namespace

ReflectionService::ReflectionService(std::vector<std::string> service_names, Authorizer authorize)
    : service_names_(std::move(service_names)),
      authorize_(std::move(authorize)),
      v1_(std::make_unique<V1Service>(service_names_, authorize_)),
      v1alpha_(std::make_unique<V1alphaService>(service_names_, authorize_)) {}

ReflectionService::~ReflectionService() = default;

grpc::Service* ReflectionService::v1() { return v1_.get(); }

grpc::Service* ReflectionService::v1alpha() { return v1alpha_.get(); }

}  // namespace polyplug::host
