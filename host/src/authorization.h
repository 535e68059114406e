// Authorization: the host's one check of a caller's bearer token.
//
// Every PluginHost method and both reflection services call it first; health does not (a
// load balancer or a supervisor probes it without credentials). It is called by each
// handler rather than applied by gRPC because gRPC 1.51 offers no hook that can refuse a
// call the way the host must: a server interceptor cannot end a call (servers have no
// Hijack), and an AuthMetadataProcessor cannot be set on insecure credentials (the unix
// sockets and plaintext TCP listeners: an assertion) nor send trailing metadata with its
// refusal (it drops the polyplug-reason trailer). A method that forgets the check fails
// SecurityControlsTest.EveryPluginHostMethodNeedsTheToken, which walks the service's
// descriptor and calls every method without the token.
#ifndef POLYPLUG_HOST_SRC_AUTHORIZATION_H_
#define POLYPLUG_HOST_SRC_AUTHORIZATION_H_

#include <grpcpp/grpcpp.h>

#include <string>

namespace polyplug::host {

class TokenAuthorizer {
 public:
  // An empty token admits every call.
  explicit TokenAuthorizer(std::string token) : token_(std::move(token)) {}

  // OK when the call carries "authorization: Bearer <token>"; else UNAUTHENTICATED with
  // the reason PERMISSION_DENIED in the message and as trailing metadata on `context`.
  // Compares in constant time. Thread-safe.
  grpc::Status Check(grpc::CallbackServerContext* context) const;

 private:
  const std::string token_;
};

}  // namespace polyplug::host

#endif  // POLYPLUG_HOST_SRC_AUTHORIZATION_H_
