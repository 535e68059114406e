#!/usr/bin/python3
"""Conformance test of a running polyplug-host, driven by a client that is not ours.

The client is Debian's Python grpcio (python3-grpcio 1.51, python3-protobuf 4.21) and it
knows nothing about polyplug's .proto files: every schema it uses comes from the server's
own reflection service, the way grpcurl would get it. Only the reflection protocol itself
comes from outside, from Debian's grpc-proto package, compiled at run time with protoc.

    reflection_conformance.py --target unix:/run/host.sock [--bundle greeter]
                              [--contract example.greeter@1]
    reflection_conformance.py --target unix:/run/host.sock --wait-ready [--attempts N]

Prints one line per check and, last, "N passed, M failed". Exit code 0 only when nothing
failed. --wait-ready only waits until grpc.health.v1.Health/Check("") answers SERVING
(bounded attempts) and exits 0, or 1 when it never did.
"""

import argparse
import base64
import importlib.util
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid

import grpc
from google.protobuf import descriptor_pb2
from google.protobuf import descriptor_pool
from google.protobuf import json_format
from google.protobuf import message_factory

HOST_SERVICE = "polyplug.host.v1.PluginHost"
HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_VERSIONS = ("v1", "v1alpha")
REQUIRED_SERVICES = (
    HOST_SERVICE,
    HEALTH_SERVICE,
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
)
# method -> (client_streaming, server_streaming), as host.proto declares them.
HOST_METHODS = {
    "Reload": (False, False),
    "LoadBundle": (False, False),
    "UnloadBundle": (False, False),
    "FindContract": (False, False),
    "ListBundles": (False, False),
    "ListContracts": (False, False),
    "GetHostInfo": (False, False),
    "SubscribeReloadPhases": (False, True),
    "OpenSession": (False, True),
    "CreateInstance": (False, False),
    "Invoke": (False, False),
    "DestroyInstance": (False, False),
    "Echo": (False, False),
}
HEALTH_METHODS = {"Check": (False, False), "Watch": (False, True)}

# Every call has a deadline, so a hung host fails the test instead of hanging it: at most
# RPC_TIMEOUT per call and, all together, the --budget given on the command line (kept
# below the ctest TIMEOUT so the summary line is always printed).
RPC_TIMEOUT = 10.0
_budget_end = None


def call_timeout():
    if _budget_end is None:
        return RPC_TIMEOUT
    return max(0.5, min(RPC_TIMEOUT, _budget_end - time.monotonic()))


def budget_left():
    return _budget_end is None or time.monotonic() < _budget_end


# ----------------------------------------------------------------------------------------
# Results


class Results:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print(f"PASS {name}", flush=True)
        else:
            self.failed += 1
            print(f"FAIL {name}" + (f": {detail}" if detail else ""), flush=True)
        return ok

    def note(self, text):
        """Information only; counts neither as passed nor as failed."""
        print(f"NOTE {text}", flush=True)

    def equal(self, name, got, want):
        return self.check(name, got == want, f"expected {want!r}, got {got!r}")


class Abort(Exception):
    """A check whose failure makes the rest of its test meaningless."""


def require(results, name, ok, detail=""):
    if not results.check(name, ok, detail):
        raise Abort(name)


# ----------------------------------------------------------------------------------------
# The reflection protocol, compiled from Debian's grpc-proto at run time


def load_reflection_modules(protoc, grpc_proto_dir, workdir):
    """Returns {"v1": module, "v1alpha": module} of generated reflection_pb2 code.

    The generated modules live in a package path "grpc/reflection/..." that would collide
    with the installed grpc package, so each is imported from its file under its own name.
    """
    rel = {v: f"grpc/reflection/{v}/reflection.proto" for v in REFLECTION_VERSIONS}
    for v, path in rel.items():
        if not os.path.isfile(os.path.join(grpc_proto_dir, path)):
            raise RuntimeError(f"{os.path.join(grpc_proto_dir, path)} is missing (package grpc-proto)")
    cmd = [protoc, f"--proto_path={grpc_proto_dir}", f"--python_out={workdir}"] + list(rel.values())
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({run.returncode}): {run.stderr.strip()}")
    modules = {}
    for v, path in rel.items():
        py = os.path.join(workdir, path[: -len(".proto")] + "_pb2.py")
        spec = importlib.util.spec_from_file_location(f"polyplug_conformance_reflection_{v}_pb2", py)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        modules[v] = module
    return modules


class ReflectionClient:
    """grpc.reflection.<version>.ServerReflection/ServerReflectionInfo through the generic API."""

    def __init__(self, channel, version, module):
        self.version = version
        self.module = module
        self._call = channel.stream_stream(
            f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
            request_serializer=module.ServerReflectionRequest.SerializeToString,
            response_deserializer=module.ServerReflectionResponse.FromString,
        )

    def exchange(self, requests):
        """Sends the requests on one stream, half-closes it, and returns the responses."""
        return list(self._call(iter(requests), timeout=call_timeout()))

    def ask(self, **fields):
        """One request on its own stream; returns its single response."""
        request = self.module.ServerReflectionRequest(**fields)
        responses = self.exchange([request])
        if len(responses) != 1:
            raise RuntimeError(f"{self.version}: {len(responses)} responses to one request")
        return request, responses[0]

    def list_services(self):
        _, response = self.ask(list_services="")
        if response.HasField("error_response"):
            raise RuntimeError(f"{self.version} list_services: {describe_error(response.error_response)}")
        return [s.name for s in response.list_services_response.service]

    def files(self, **fields):
        """file_containing_symbol= or file_by_filename=; returns [FileDescriptorProto]."""
        _, response = self.ask(**fields)
        if response.HasField("error_response"):
            raise LookupError(f"{self.version} {fields}: {describe_error(response.error_response)}")
        return [
            descriptor_pb2.FileDescriptorProto.FromString(raw)
            for raw in response.file_descriptor_response.file_descriptor_proto
        ]


def describe_error(error_response):
    try:
        code = grpc.StatusCode(next(c for c in grpc.StatusCode if c.value[0] == error_response.error_code))
        code = code.name
    except StopIteration:
        code = str(error_response.error_code)
    return f"error_response {code}: {error_response.error_message!r}"


# ----------------------------------------------------------------------------------------
# Schemas built only from what the server returns


class Schema:
    """A descriptor pool filled with the FileDescriptorProtos the server sent."""

    def __init__(self, reflection):
        self.reflection = reflection
        self.files = {}  # name -> FileDescriptorProto
        self.pool = descriptor_pool.DescriptorPool()
        self._added = set()
        self._classes = {}
        self._factory = None if hasattr(message_factory, "GetMessageClass") else \
            message_factory.MessageFactory(self.pool)

    def fetch_symbol(self, symbol):
        """Fetches the file defining `symbol` and, transitively, every file it imports."""
        for fdp in self.reflection.files(file_containing_symbol=symbol):
            self.files.setdefault(fdp.name, fdp)
        # A conformant server sends the dependencies too; ask for any it left out.
        while True:
            missing = sorted({d for f in self.files.values() for d in f.dependency} - set(self.files))
            if not missing:
                break
            for name in missing:
                for fdp in self.reflection.files(file_by_filename=name):
                    self.files.setdefault(fdp.name, fdp)
                if name not in self.files:
                    raise LookupError(f"file_by_filename {name!r} did not return that file")
        self._add_all()

    def _add_all(self):
        def add(name, stack):
            if name in self._added:
                return
            if name in stack:
                raise ValueError(f"import cycle through {name}")
            fdp = self.files[name]
            for dep in fdp.dependency:
                add(dep, stack + (name,))
            self.pool.AddSerializedFile(fdp.SerializeToString())
            self._added.add(name)

        for name in sorted(self.files):
            add(name, ())

    def message_class(self, full_name):
        if full_name not in self._classes:
            desc = self.pool.FindMessageTypeByName(full_name)
            if self._factory is None:
                self._classes[full_name] = message_factory.GetMessageClass(desc)
            else:
                self._classes[full_name] = self._factory.GetPrototype(desc)
        return self._classes[full_name]

    def enum_value(self, enum_full_name, value_name):
        return self.pool.FindEnumTypeByName(enum_full_name).values_by_name[value_name].number

    def enum_name(self, enum_full_name, number):
        value = self.pool.FindEnumTypeByName(enum_full_name).values_by_number.get(number)
        return value.name if value is not None else str(number)


class DynamicStub:
    """Calls the methods of one service through grpc's generic API and the Schema's classes."""

    def __init__(self, channel, schema, service):
        self.channel = channel
        self.schema = schema
        self.service = schema.pool.FindServiceByName(service)

    def _method(self, name):
        md = self.service.methods_by_name[name]
        req = self.schema.message_class(md.input_type.full_name)
        resp = self.schema.message_class(md.output_type.full_name)
        return md, req, resp

    def request(self, method, **fields):
        _, req, _ = self._method(method)
        return req(**fields)

    def unary(self, method, request=None, timeout=None, with_call=False, **fields):
        timeout = timeout or call_timeout()
        md, req, resp = self._method(method)
        call = self.channel.unary_unary(
            f"/{self.service.full_name}/{method}",
            request_serializer=req.SerializeToString,
            response_deserializer=resp.FromString,
        )
        if request is None:
            request = req(**fields)
        if with_call:
            return call.with_call(request, timeout=timeout)
        return call(request, timeout=timeout)

    def stream(self, method, request=None, timeout=None, **fields):
        timeout = timeout or call_timeout()
        md, req, resp = self._method(method)
        call = self.channel.unary_stream(
            f"/{self.service.full_name}/{method}",
            request_serializer=req.SerializeToString,
            response_deserializer=resp.FromString,
        )
        if request is None:
            request = req(**fields)
        return call(request, timeout=timeout)


# ----------------------------------------------------------------------------------------
# Readiness (deliberately independent of reflection, which is under test)


def _health_status_from_wire(data):
    """grpc.health.v1.HealthCheckResponse is one enum field: status = 1 (SERVING = 1)."""
    pos, status = 0, 0
    while pos < len(data):
        key = data[pos]
        pos += 1
        if key != 0x08:
            return None
        value, shift = 0, 0
        while True:
            b = data[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        status = value
    return status


def wait_ready(target, attempts, attempt_timeout, host_pid):
    socket_path = target[len("unix:"):] if target.startswith("unix:") else None
    last = "no attempt made"
    for attempt in range(1, attempts + 1):
        if host_pid:
            try:
                os.kill(host_pid, 0)
            except ProcessLookupError:
                print(f"wait-ready: host process {host_pid} is gone", flush=True)
                return False
        if socket_path and not os.path.exists(socket_path):
            last = f"{socket_path} does not exist"
            time.sleep(attempt_timeout)
            continue
        channel = grpc.insecure_channel(target)
        try:
            grpc.channel_ready_future(channel).result(timeout=attempt_timeout)
            check = channel.unary_unary(
                "/grpc.health.v1.Health/Check",
                request_serializer=lambda raw: raw,
                response_deserializer=lambda raw: raw,
            )
            status = _health_status_from_wire(check(b"", timeout=attempt_timeout))  # service ""
            if status == 1:
                print(f"wait-ready: {target} SERVING after {attempt} attempt(s)", flush=True)
                return True
            last = f"Health/Check(\"\") status {status}"
            time.sleep(attempt_timeout)
        except grpc.FutureTimeoutError:
            last = "channel not ready"
        except grpc.RpcError as e:
            last = f"Health/Check: {e.code().name} {e.details()}"
            time.sleep(attempt_timeout)
        finally:
            channel.close()
    print(f"wait-ready: {target} not ready after {attempts} attempts: {last}", flush=True)
    return False


# ----------------------------------------------------------------------------------------
# The tests


class Conformance:
    def __init__(self, args, results, refl_modules):
        self.args = args
        self.r = results
        self.channel = grpc.insecure_channel(args.target)
        self.reflection = {v: ReflectionClient(self.channel, v, refl_modules[v]) for v in REFLECTION_VERSIONS}
        self.schema = None
        self.host = None
        self.health = None
        self.contract_bare = args.contract.split("@", 1)[0]
        self.contract_major = int(args.contract.split("@", 1)[1]) if "@" in args.contract else None

    # shorthands for the host enums
    def ev(self, enum, value):
        return self.schema.enum_value(f"polyplug.host.v1.{enum}", value)

    def en(self, enum, number):
        return self.schema.enum_name(f"polyplug.host.v1.{enum}", number)

    def fmt_event(self, e):
        return (f"seq={e.seq} kind={self.en('EventKind', e.kind)} phase={self.en('Phase', e.phase)} "
                f"bundle={e.bundle_name!r} reload_id={e.reload_id} root={e.root_reload_id} "
                f"parent={e.parent_reload_id}")

    # 1 ---------------------------------------------------------------------------------
    def test_list_services(self):
        lists = {}
        for v, client in self.reflection.items():
            services = client.list_services()
            lists[v] = services
            for s in REQUIRED_SERVICES:
                self.r.check(f"1 list_services over {v} contains {s}", s in services, f"got {services}")
            self.r.check(f"1 list_services over {v} has no duplicates",
                         len(services) == len(set(services)), f"got {services}")
        self.r.equal("1 v1 and v1alpha list the same services", sorted(lists["v1"]), sorted(lists["v1alpha"]))

        # Both versions echo the request and answer a batch on one stream in order.
        for v, client in self.reflection.items():
            m = client.module
            reqs = [m.ServerReflectionRequest(list_services=""),
                    m.ServerReflectionRequest(file_containing_symbol=HOST_SERVICE),
                    m.ServerReflectionRequest(file_containing_symbol="no.such.Symbol" + uuid.uuid4().hex)]
            resps = client.exchange(reqs)
            self.r.equal(f"1 {v}: three requests on one stream get three responses", len(resps), 3)
            if len(resps) == 3:
                self.r.check(f"1 {v}: responses echo original_request",
                             all(resp.original_request == req for req, resp in zip(reqs, resps)),
                             f"got {[str(resp.original_request) for resp in resps]}")
                self.r.check(f"1 {v}: response kinds follow the requests",
                             [resp.WhichOneof("message_response") for resp in resps]
                             == ["list_services_response", "file_descriptor_response", "error_response"],
                             f"got {[resp.WhichOneof('message_response') for resp in resps]}")
                self.r.equal(f"1 {v}: unknown symbol -> error_response NOT_FOUND",
                             resps[2].error_response.error_code, grpc.StatusCode.NOT_FOUND.value[0])

    # 2 ---------------------------------------------------------------------------------
    def test_describe_host(self):
        # The same file over both versions: the wire formats are identical.
        per_version = {}
        for v, client in self.reflection.items():
            fdps = client.files(file_containing_symbol=HOST_SERVICE)
            per_version[v] = {f.name: f for f in fdps}
            owners = [f.name for f in fdps if f.package == "polyplug.host.v1"
                      and any(s.name == "PluginHost" for s in f.service)]
            self.r.check(f"2 file_containing_symbol {HOST_SERVICE} over {v} returns its file",
                         len(owners) == 1, f"files {[f.name for f in fdps]}")
        self.r.equal("2 v1 and v1alpha return the same files for PluginHost",
                     sorted(per_version["v1"]), sorted(per_version["v1alpha"]))

        self.schema = Schema(self.reflection["v1"])
        self.schema.fetch_symbol(HOST_SERVICE)
        try:
            service = self.schema.pool.FindServiceByName(HOST_SERVICE)
        except KeyError:
            service = None
        require(self.r, "2 the returned files build a descriptor pool holding PluginHost", service is not None)
        for name, (cs, ss) in HOST_METHODS.items():
            md = service.methods_by_name.get(name)
            if not self.r.check(f"2 PluginHost.{name} exists", md is not None,
                                f"methods {sorted(service.methods_by_name)}"):
                continue
            # python protobuf exposes the flags on the MethodDescriptorProto
            mdp = descriptor_pb2.MethodDescriptorProto()
            md.CopyToProto(mdp)
            self.r.equal(f"2 PluginHost.{name} streaming (client, server)",
                         (mdp.client_streaming, mdp.server_streaming), (cs, ss))
        for name, in_type, out_type in [
            ("Reload", "ReloadRequest", "ReloadResponse"),
            ("FindContract", "FindContractRequest", "ContractHandle"),
            ("SubscribeReloadPhases", "SubscribeReloadPhasesRequest", "ReloadPhaseEvent"),
            ("ListBundles", "ListBundlesRequest", "ListBundlesResponse"),
            ("GetHostInfo", "GetHostInfoRequest", "HostInfo"),
        ]:
            md = service.methods_by_name.get(name)
            if md is not None:
                self.r.equal(f"2 PluginHost.{name} types",
                             (md.input_type.full_name, md.output_type.full_name),
                             (f"polyplug.host.v1.{in_type}", f"polyplug.host.v1.{out_type}"))
        # Comments travel in source_code_info; grpcurl describe shows them only if the server
        # sends it. Descriptors compiled into C++ code carry none, so this is a note, not a check.
        host_file = self.schema.files.get(service.file.name)
        locations = len(host_file.source_code_info.location) if host_file is not None else 0
        self.r.note(f"2 {service.file.name} carries {locations} source_code_info locations"
                    + ("" if locations else " (describe will show no comments)"))
        self.host = DynamicStub(self.channel, self.schema, HOST_SERVICE)

    # 3 ---------------------------------------------------------------------------------
    def test_health(self):
        if self.schema is None:
            self.schema = Schema(self.reflection["v1"])
        try:
            self.schema.fetch_symbol(HEALTH_SERVICE)
            service = self.schema.pool.FindServiceByName(HEALTH_SERVICE)
        except (LookupError, KeyError) as e:
            require(self.r, f"3 file_containing_symbol {HEALTH_SERVICE} (grpc/grpc#36665 if missing)", False, str(e))
        self.r.check(f"3 file_containing_symbol {HEALTH_SERVICE} returns the Health service", True)
        for name, (cs, ss) in HEALTH_METHODS.items():
            md = service.methods_by_name.get(name)
            if self.r.check(f"3 Health.{name} exists", md is not None):
                mdp = descriptor_pb2.MethodDescriptorProto()
                md.CopyToProto(mdp)
                self.r.equal(f"3 Health.{name} streaming (client, server)",
                             (mdp.client_streaming, mdp.server_streaming), (cs, ss))
        self.health = DynamicStub(self.channel, self.schema, HEALTH_SERVICE)
        resp = self.health.unary("Check", service="")
        serving = self.schema.enum_name("grpc.health.v1.HealthCheckResponse.ServingStatus", resp.status)
        self.r.equal('3 Health/Check("") status', serving, "SERVING")
        # Per the health protocol, an unknown service is NOT_FOUND.
        unknown = "no.such.Service" + uuid.uuid4().hex
        try:
            resp = self.health.unary("Check", service=unknown)
            self.r.check("3 Health/Check(unknown) -> NOT_FOUND", False, f"got OK {resp}")
        except grpc.RpcError as e:
            self.r.equal("3 Health/Check(unknown) -> NOT_FOUND", e.code(), grpc.StatusCode.NOT_FOUND)

    # 4 ---------------------------------------------------------------------------------
    def test_host_calls(self):
        require(self.r, "4 PluginHost schema available", self.host is not None)
        bundle = self.args.bundle
        info = self.host.unary("GetHostInfo")
        self.r.check("4 GetHostInfo.version is set", info.version != "", str(info))
        self.r.check("4 GetHostInfo.host_epoch is non-zero", info.host_epoch != 0, str(info))
        self.r.check("4 GetHostInfo.hot_reload_enabled", info.hot_reload_enabled, str(info))
        self.r.check("4 GetHostInfo.bundle_roots is not empty", len(info.bundle_roots) > 0, str(info))
        self.r.check("4 GetHostInfo.listen_addresses is not empty", len(info.listen_addresses) > 0, str(info))

        listing = self.host.unary("ListBundles")
        names = [b.name for b in listing.bundles]
        require(self.r, f"4 ListBundles lists {bundle!r}", bundle in names, f"got {names}")
        self.r.equal("4 ListBundles is sorted by name", names, sorted(names))
        self.r.equal("4 ListBundles.host_epoch == GetHostInfo.host_epoch", listing.host_epoch, info.host_epoch)
        self.r.equal("4 GetHostInfo.bundle_count == len(ListBundles)", info.bundle_count, len(names))
        entry = next(b for b in listing.bundles if b.name == bundle)
        if self.contract_major is not None:
            self.r.check(f"4 bundle {bundle!r} provides {self.args.contract}",
                         self.args.contract in entry.provides, f"provides {list(entry.provides)}")

        find = {"name": self.args.contract}
        handle = self.host.unary("FindContract", **find)
        self.r.equal("4 FindContract.provider_bundle_name", handle.provider_bundle_name, bundle)
        self.r.equal("4 FindContract.contract_name", handle.contract_name, self.contract_bare)
        self.r.equal("4 FindContract.provider_bundle_id == Bundle.id", handle.provider_bundle_id, entry.id)
        self.r.equal("4 FindContract.host_epoch", handle.host_epoch, info.host_epoch)
        if self.contract_major is not None:
            self.r.equal("4 FindContract.contract_version.major", handle.contract_version.major,
                         self.contract_major)

        reload = self.host.unary("Reload", name=bundle)
        self.check_reload_response("4", reload, bundle, info.host_epoch)
        after = self.host.unary("ListBundles")
        entry_after = next((b for b in after.bundles if b.name == bundle), None)
        self.r.check(f"4 ListBundles after Reload: {bundle!r} reload_count went up",
                     entry_after is not None and entry_after.reload_count == entry.reload_count + 1,
                     f"before {entry.reload_count}, after {entry_after and entry_after.reload_count}")
        self.r.check("4 registry_revision went up with the reload",
                     after.registry_revision > listing.registry_revision,
                     f"before {listing.registry_revision}, after {after.registry_revision}")
        # The handle survives a hot reload of its provider.
        handle_after = self.host.unary("FindContract", **find)
        self.r.equal("4 FindContract after Reload: same {index, generation}",
                     (handle_after.index, handle_after.generation), (handle.index, handle.generation))

    def check_reload_response(self, step, reload, bundle, host_epoch):
        outcome = self.en("ReloadOutcome", reload.outcome)
        self.r.equal(f"{step} Reload{{name: {bundle}}}.outcome", outcome, "RELOAD_OUTCOME_RELOADED")
        if outcome != "RELOAD_OUTCOME_RELOADED":
            print(f"     reason={self.en('FailureReason', reload.reason)} message={reload.message!r}")
        self.r.equal(f"{step} Reload.bundle_name", reload.bundle_name, bundle)
        self.r.equal(f"{step} Reload.host_epoch", reload.host_epoch, host_epoch)
        self.r.check(f"{step} Reload.reload_id is non-zero", reload.reload_id != 0)
        mine = [e for e in reload.events if e.bundle_name == bundle]
        self.r.equal(f"{step} Reload events of {bundle!r}", [self.en("Phase", e.phase) for e in mine],
                     ["PHASE_PREPARING", "PHASE_RELOADED"])
        seqs = [e.seq for e in reload.events]
        self.r.check(f"{step} Reload events are in strictly increasing seq order",
                     all(a < b for a, b in zip(seqs, seqs[1:])), f"seqs {seqs}")
        self.r.check(f"{step} Reload events all have kind EVENT_KIND_PHASE and root_reload_id == reload_id",
                     all(self.en("EventKind", e.kind) == "EVENT_KIND_PHASE"
                         and e.root_reload_id == reload.reload_id for e in reload.events),
                     "; ".join(self.fmt_event(e) for e in reload.events))
        self.r.check(f"{step} {bundle!r} events are the primary (reload_id == root, parent 0)",
                     all(e.reload_id == reload.reload_id and e.parent_reload_id == 0 for e in mine),
                     "; ".join(self.fmt_event(e) for e in mine))
        if reload.events:
            last = reload.events[-1]
            self.r.check(f"{step} the primary RELOADED is the last event (after the cascade)",
                         last.bundle_name == bundle and self.en("Phase", last.phase) == "PHASE_RELOADED",
                         self.fmt_event(last))

    # 5 ---------------------------------------------------------------------------------
    def test_subscribe(self):
        require(self.r, "5 PluginHost schema available", self.host is not None)
        bundle = self.args.bundle
        info = self.host.unary("GetHostInfo")
        listing = self.host.unary("ListBundles")
        request = self.host.request("SubscribeReloadPhases", include_snapshot=True, until_next_terminal=True)
        stream = self.host.stream("SubscribeReloadPhases", request=request)

        K = lambda e: self.en("EventKind", e.kind)  # noqa: E731
        P = lambda e: self.en("Phase", e.phase)  # noqa: E731
        snapshot, snapshot_end, live = [], None, []
        reload_result = queue.Queue()
        reloader = None
        subscribers_seen = None
        end_code, end_details = None, None
        try:
            for event in stream:
                if snapshot_end is None:
                    if K(event) == "EVENT_KIND_SNAPSHOT":
                        snapshot.append(event)
                        continue
                    if K(event) == "EVENT_KIND_SNAPSHOT_END":
                        snapshot_end = event
                        subscribers_seen = self.host.unary("GetHostInfo").subscriber_count

                        def do_reload():
                            try:
                                reload_result.put(self.host.unary("Reload", name=bundle))
                            except Exception as e:  # reported by the main thread
                                reload_result.put(e)

                        reloader = threading.Thread(target=do_reload, daemon=True)
                        reloader.start()
                        continue
                    self.r.check("5 the stream starts with SNAPSHOT events then SNAPSHOT_END", False,
                                 f"got {self.fmt_event(event)} before SNAPSHOT_END")
                    snapshot_end = event  # keep reading; the rest still gets checked
                    continue
                live.append(event)
            end_code, end_details = stream.code(), stream.details()
        except grpc.RpcError as e:
            end_code, end_details = e.code(), e.details()
        if reloader is not None:
            reloader.join(call_timeout())

        self.r.equal("5 the stream ends with status", end_code, grpc.StatusCode.OK)
        if end_code != grpc.StatusCode.OK:
            print(f"     details: {end_details!r}; live events so far: "
                  + "; ".join(self.fmt_event(e) for e in live))
        snap_names = [e.bundle_name for e in snapshot]
        self.r.equal("5 the snapshot has one EVENT_KIND_SNAPSHOT per loaded bundle",
                     sorted(snap_names), sorted(b.name for b in listing.bundles))
        self.r.check(f"5 the snapshot has {bundle!r}", bundle in snap_names, f"got {snap_names}")
        self.r.check("5 snapshot events have phase LOADED and the host epoch",
                     all(P(e) == "PHASE_LOADED" and e.host_epoch == info.host_epoch for e in snapshot),
                     "; ".join(self.fmt_event(e) for e in snapshot))
        require(self.r, "5 EVENT_KIND_SNAPSHOT_END arrived", snapshot_end is not None
                and K(snapshot_end) == "EVENT_KIND_SNAPSHOT_END")
        self.r.check("5 SNAPSHOT_END.seq is at least GetHostInfo.last_seq from before",
                     snapshot_end.seq >= info.last_seq, f"{snapshot_end.seq} < {info.last_seq}")
        self.r.check("5 GetHostInfo.subscriber_count >= 1 while subscribed",
                     subscribers_seen is not None and subscribers_seen >= 1, f"got {subscribers_seen}")

        reload = None
        try:
            reload = reload_result.get_nowait()
        except queue.Empty:
            pass
        if isinstance(reload, Exception):
            self.r.check("5 the concurrent Reload succeeded", False, repr(reload))
            reload = None
        else:
            self.r.check("5 the concurrent Reload returned", reload is not None)

        mine = [e for e in live if e.bundle_name == bundle]
        self.r.equal(f"5 live events of {bundle!r}", [P(e) for e in mine], ["PHASE_PREPARING", "PHASE_RELOADED"])
        self.r.check("5 live events are EVENT_KIND_PHASE",
                     all(K(e) == "EVENT_KIND_PHASE" for e in live), "; ".join(self.fmt_event(e) for e in live))
        seqs = [e.seq for e in live]
        expected = list(range(snapshot_end.seq + 1, snapshot_end.seq + 1 + len(live)))
        self.r.equal("5 live seqs follow SNAPSHOT_END.seq with no gap (unfiltered stream)", seqs, expected)
        if live:
            self.r.check(f"5 the stream ended right after the primary RELOADED of {bundle!r}",
                         live[-1].bundle_name == bundle and P(live[-1]) == "PHASE_RELOADED",
                         self.fmt_event(live[-1]))
        if reload is not None:
            self.r.equal("5 the stream delivered exactly the events of the Reload response",
                         [(e.seq, e.phase, e.bundle_name, e.reload_id) for e in live],
                         [(e.seq, e.phase, e.bundle_name, e.reload_id) for e in reload.events])

    # 6 ---------------------------------------------------------------------------------
    def test_reload_unknown(self):
        require(self.r, "6 PluginHost schema available", self.host is not None)
        name = "no-such-bundle-" + uuid.uuid4().hex[:8]
        try:
            resp = self.host.unary("Reload", name=name)
            self.r.check(f"6 Reload{{name: {name}}} -> NOT_FOUND", False, f"got OK: {resp}")
            return
        except grpc.RpcError as e:
            err = e
        self.r.equal(f"6 Reload{{name: {name}}} -> status", err.code(), grpc.StatusCode.NOT_FOUND)
        self.r.check("6 the error details name the bundle", name in (err.details() or ""),
                     f"details {err.details()!r}")
        # host.proto: reason tokens appear as "[TOKEN]" in the message and as polyplug-reason.
        self.r.check("6 the error details carry [BUNDLE_NOT_FOUND]",
                     "[BUNDLE_NOT_FOUND]" in (err.details() or ""), f"details {err.details()!r}")
        trailers = dict(err.trailing_metadata() or ())
        self.r.equal("6 trailing metadata polyplug-reason", trailers.get("polyplug-reason"), "BUNDLE_NOT_FOUND")
        # The same reason as a google.rpc.ErrorInfo detail; its types come from reflection too.
        raw = trailers.get("grpc-status-details-bin")
        self.r.check("6 the error carries grpc-status-details-bin", raw is not None)
        if raw is None:
            return
        schema = self.host.schema
        schema.fetch_symbol("google.rpc.Status")
        schema.fetch_symbol("google.rpc.ErrorInfo")
        status = schema.message_class("google.rpc.Status").FromString(raw)
        self.r.equal("6 google.rpc.Status code", status.code, grpc.StatusCode.NOT_FOUND.value[0])
        self.r.equal("6 one detail, an ErrorInfo", [d.type_url for d in status.details],
                     ["type.googleapis.com/google.rpc.ErrorInfo"])
        if len(status.details) == 1:
            info = schema.message_class("google.rpc.ErrorInfo").FromString(status.details[0].value)
            self.r.equal("6 ErrorInfo reason and domain", (info.reason, info.domain),
                         ("BUNDLE_NOT_FOUND", "polyplug.host"))

    def test_invoke(self):
        require(self.r, "7 PluginHost schema available", self.host is not None)
        # What grpcurl sends for -d '{"contract": ..., "method": ..., "request": "<base64>"}':
        # JSON with the bytes in base64, read with nothing but the reflected schema.
        _, invoke_request, _ = self.host._method("Invoke")
        payload = base64.b64encode(b"conformance").decode()
        request = json_format.Parse(
            '{"contract": "example.greeter@1", "method": "greet", "request": "%s"}' % payload,
            invoke_request())
        answer = self.host.unary("Invoke", request=request)
        self.r.check("7 Invoke greet (base64 request from JSON) answers with the name",
                     b"conformance" in answer.response, repr(answer.response))
        as_json = json_format.MessageToJson(answer, preserving_proto_field_name=True)
        self.r.check("7 the answer's bytes are base64 in JSON",
                     base64.b64encode(answer.response).decode() in as_json, as_json)
        self.r.equal("7 the answer names its provider", answer.handle.provider_bundle_name, "greeter")
        instance = self.host.unary("CreateInstance", contract="example.greeter@1")
        self.r.check("7 CreateInstance gives an instance id", instance.instance_id > 0, str(instance))
        # (InvokeRequest has a field called `method`: build it from the class directly.)
        again = self.host.unary("Invoke", request=invoke_request(
            instance=instance, method="greet", request=b"again"))
        self.r.check("7 Invoke on the instance answers", b"again" in again.response,
                     repr(again.response))
        self.host.unary("DestroyInstance", instance=instance)
        try:
            self.host.unary("Invoke", request=invoke_request(
                instance=instance, method="greet", request=b"x"))
            self.r.check("7 Invoke on a destroyed instance fails", False, "got OK")
        except grpc.RpcError as e:
            self.r.equal("7 Invoke on a destroyed instance -> NOT_FOUND", e.code(),
                         grpc.StatusCode.NOT_FOUND)
        try:
            self.host.unary("Invoke", request=invoke_request(
                contract="example.greeter@1", method="no_such_method"))
            self.r.check("7 an unknown method fails", False, "got OK")
        except grpc.RpcError as e:
            self.r.equal("7 an unknown method -> UNIMPLEMENTED", e.code(),
                         grpc.StatusCode.UNIMPLEMENTED)
            self.r.check("7 ... with [METHOD_NOT_FOUND]", "[METHOD_NOT_FOUND]" in (e.details() or ""),
                         e.details())

        # A lease, as grpcurl would hold one: the OpenSession stream's one message names the
        # session; an instance made under it dies when the stream ends.
        session_stream = self.host.stream("OpenSession")
        session = next(session_stream)
        self.r.check("7 OpenSession sends a session id", session.session_id > 0, str(session))
        _, create_request, _ = self.host._method("CreateInstance")
        leased = self.host.unary("CreateInstance", request=json_format.Parse(
            '{"contract": "example.greeter@1", "session_id": "%d"}' % session.session_id,
            create_request()))
        again = self.host.unary("Invoke", request=invoke_request(
            instance=leased, method="greet", request=b"leased"))
        self.r.check("7 Invoke on a leased instance answers", b"leased" in again.response,
                     repr(again.response))
        session_stream.cancel()
        deadline = time.monotonic() + call_timeout()
        while (self.host.unary("GetHostInfo").session_count > 0
               and time.monotonic() < deadline):
            time.sleep(0.02)  # the host notices the closed stream on its own schedule
        try:
            self.host.unary("Invoke", request=invoke_request(
                instance=leased, method="greet", request=b"x"))
            self.r.check("7 Invoke after the session ended fails", False, "got OK")
        except grpc.RpcError as e:
            self.r.equal("7 Invoke after the session ended -> FAILED_PRECONDITION", e.code(),
                         grpc.StatusCode.FAILED_PRECONDITION)
            self.r.check("7 ... with [LEASE_EXPIRED]", "[LEASE_EXPIRED]" in (e.details() or ""),
                         e.details())

    def run(self):
        for step in (self.test_list_services, self.test_describe_host, self.test_health,
                     self.test_host_calls, self.test_subscribe, self.test_reload_unknown,
                     self.test_invoke):
            print(f"--- {step.__name__}", flush=True)
            if not budget_left():
                self.r.check(f"{step.__name__} ran", False, "the time budget (--budget) ran out")
                continue
            try:
                step()
            except Abort:
                pass
            except grpc.RpcError as e:
                self.r.check(f"{step.__name__} raised no gRPC error", False,
                             f"{e.code().name}: {e.details()!r}")
            except Exception as e:  # a broken step must count, not crash the run
                self.r.check(f"{step.__name__} raised no exception", False, f"{type(e).__name__}: {e}")
                traceback.print_exc(file=sys.stdout)
        self.channel.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True, help="gRPC target, e.g. unix:/tmp/host.sock")
    parser.add_argument("--bundle", default="greeter", help="name of a loaded bundle")
    parser.add_argument("--contract", default="example.greeter@1", help="a contract that bundle provides")
    parser.add_argument("--wait-ready", action="store_true",
                        help="only wait until Health/Check(\"\") is SERVING, then exit")
    parser.add_argument("--attempts", type=int, default=100, help="--wait-ready: attempts (default 100)")
    parser.add_argument("--attempt-timeout", type=float, default=0.2,
                        help="--wait-ready: seconds per attempt (default 0.2)")
    parser.add_argument("--host-pid", type=int, default=0,
                        help="--wait-ready: give up as soon as this process is gone")
    parser.add_argument("--budget", type=float, default=60.0,
                        help="seconds for the whole test run (default 60); calls time out within it")
    parser.add_argument("--protoc", default="/usr/bin/protoc")
    parser.add_argument("--grpc-proto-dir", default="/usr/share/grpc-proto")
    args = parser.parse_args()

    if args.wait_ready:
        return 0 if wait_ready(args.target, args.attempts, args.attempt_timeout, args.host_pid) else 1

    global _budget_end
    _budget_end = time.monotonic() + args.budget
    results = Results()
    workdir = tempfile.mkdtemp(prefix="polyplug-conformance-")
    try:
        try:
            modules = load_reflection_modules(args.protoc, args.grpc_proto_dir, workdir)
        except Exception as e:
            results.check("generate the reflection protocol modules with protoc", False, str(e))
            modules = None
        if modules is not None:
            Conformance(args, results, modules).run()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if results.passed + results.failed == 0:
        results.check("at least one check ran", False)
    print(f"{results.passed} passed, {results.failed} failed", flush=True)
    return 0 if results.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
