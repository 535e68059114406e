// ReflectionService: gRPC server reflection (grpc.reflection.v1 and v1alpha) answered from
// the generated descriptor pool, so that grpcurl, grpcui, evans, Postman and grpc_cli can
// list, describe and call the host's services without any .proto files.
//
// Why our own: Debian's libgrpc++_reflection (1.51) serves only v1alpha, and today's tools
// try v1 first (some speak only v1). The two protos differ only in their package, so one
// implementation serves both.
#ifndef POLYPLUG_HOST_SRC_REFLECTION_SERVICE_H_
#define POLYPLUG_HOST_SRC_REFLECTION_SERVICE_H_

#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/service_type.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace polyplug::host {

// Owns two callback services, grpc.reflection.v1.ServerReflection (v1()) and
// grpc.reflection.v1alpha.ServerReflection (v1alpha()); register both with one
// grpc::ServerBuilder. Each ServerReflectionInfo stream answers its requests in order:
//   list_services                 -> the names given to the constructor, in that order;
//   file_by_filename              -> that file;
//   file_containing_symbol        -> the file declaring a service, method, message, enum,
//                                    enum value, field, oneof or extension (full name,
//                                    nested types included);
//   file_containing_extension     -> the file declaring that extension;
//   all_extension_numbers_of_type -> the extension numbers the pool knows for a message.
// A file response holds the requested file first, then its transitive imports; each import
// is sent at most once per stream (a client keeps what it was sent, as with grpc-go's
// server), while the file a request names is always sent. Unknown names get an
// error_response NOT_FOUND, a request with no message_request INVALID_ARGUMENT; the stream
// itself stays open. Every response echoes the request's `host` and the request itself.
//
// Only files linked into the process are in DescriptorPool::generated_pool(): a service is
// describable when its generated .pb.cc is linked (the services the host registers are).
//
// Thread-safe; reactions never block (descriptor lookups only). Must outlive the
// grpc::Server it is registered with (Server::Shutdown returns after every stream's OnDone).
class ReflectionService {
 public:
  // `service_names`: full names (e.g. "polyplug.host.v1.PluginHost") that list_services
  // reports. Nothing checks that they are registered or linked.
  // Decides whether a stream may start; a non-OK status ends it at once.
  using Authorizer = std::function<grpc::Status(grpc::CallbackServerContext*)>;

  // `authorize` (optional) runs once per stream.
  explicit ReflectionService(std::vector<std::string> service_names,
                             Authorizer authorize = nullptr);
  ~ReflectionService();
  ReflectionService(const ReflectionService&) = delete;
  ReflectionService& operator=(const ReflectionService&) = delete;

  // grpc.reflection.v1.ServerReflection. Owned by this object.
  grpc::Service* v1();
  // grpc.reflection.v1alpha.ServerReflection. Owned by this object.
  grpc::Service* v1alpha();

  // The names list_services reports.
  const std::vector<std::string>& service_names() const { return service_names_; }

 private:
  const std::vector<std::string> service_names_;
  const Authorizer authorize_;
  std::unique_ptr<grpc::Service> v1_;
  std::unique_ptr<grpc::Service> v1alpha_;
};

}  // namespace polyplug::host

#endif  // POLYPLUG_HOST_SRC_REFLECTION_SERVICE_H_
