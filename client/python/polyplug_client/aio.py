"""polyplug_client for asyncio tools, on grpcio's grpc.aio.

    async with AsyncHostClient(target) as host:
        response = await host.reload("greeter")
        async for item in host.events():
            ...

AsyncHostClient has the calls of HostClient as coroutines, with the same arguments,
results and exceptions (instances are made under a session of its own, read by a task),
and events() as an async iterator with the same guarantees as HostClient.events() (the
shared protocol is _stream.py). Tracked contracts and live instances are HostClient's (they
run on threads); use a HostClient beside this one for them. Use an AsyncHostClient on one
event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import weakref
from pathlib import Path
from typing import Any, AsyncGenerator, Callable

import grpc
import grpc.aio

from polyplug.host.v1 import host_pb2, host_pb2_grpc
from polyplug_client import _health
from polyplug_client._connection import (ConnectOptions, channel_arguments, channel_credentials,
                                         check_options, deadline_of, default_host_target,
                                         normalize_target)
from polyplug_client._push import Upload
from polyplug_client._stream import Backoff, StreamCore, SubscribeOptions, is_established
from polyplug_client.client import ServingStatus
from polyplug_client.errors import PolyplugError, error_from_rpc, make_error
from polyplug_client.events import Cursor, SubscriptionItem


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


class AsyncEventStream:
    """An async iterator over what a subscription delivers, read on the event loop. An item
    counts as handled, and `cursor` moves past it, when the next one is asked for. The
    iteration ends after a Stopped or once close() was called."""

    def __init__(self, client: AsyncHostClient, options: SubscribeOptions):
        self._client = client
        self._core = StreamCore(options)
        self._closed = asyncio.Event()
        self._call: Any = None
        self._connected = False
        self._iterator = self._run()

    def __aiter__(self) -> AsyncEventStream:
        return self

    async def __anext__(self) -> SubscriptionItem:
        return await self._iterator.__anext__()

    async def __aenter__(self) -> AsyncEventStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def cursor(self) -> Cursor | None:
        """The position of the last item handled."""
        return self._core.cursor

    @property
    def connected(self) -> bool:
        """True while a stream to the host is established."""
        return self._connected

    async def close(self) -> None:
        """Ends the iteration: cancels the stream and wakes a reconnect wait."""
        self._closed.set()
        if self._call is not None:
            self._call.cancel()
        try:
            await self._iterator.aclose()
        except RuntimeError:
            pass  # a task is inside __anext__: the cancelled call ends its iteration

    async def _run(self) -> AsyncGenerator[SubscriptionItem, None]:
        options = self._client.options
        backoff = Backoff(options.reconnect_initial_backoff, options.reconnect_max_backoff)
        while not self._closed.is_set():
            call = self._client._stub.SubscribeReloadPhases(
                self._core.request(), metadata=self._client._metadata,
                wait_for_ready=self._core.wait_for_ready)
            self._call = call
            error: PolyplugError | None = None
            established = False
            try:
                established = is_established(await call.initial_metadata())
                if established:
                    self._connected = True
                    backoff.reset()
                    for delivery in self._core.established():
                        yield delivery.item
                async for message in call:
                    if self._closed.is_set():
                        break
                    for delivery in self._core.on_message(message):
                        if self._closed.is_set():
                            return
                        yield delivery.item
                        if delivery.cursor is not None:
                            self._core.cursor = delivery.cursor
            except grpc.aio.AioRpcError as rpc_error:
                error = error_from_rpc(rpc_error, self._client.target, None)
            except asyncio.CancelledError:
                call.cancel()
                task = asyncio.current_task()
                if self._closed.is_set() and (task is None or task.cancelling() == 0):
                    return  # close() cancelled the call, not the task: the iteration ends
                raise
            finally:
                self._connected = False
                self._call = None
                call.cancel()
            if self._closed.is_set():
                return
            deliveries, next_step = self._core.ended(error, established)
            for delivery in deliveries:
                yield delivery.item
            if next_step == "stop":
                return
            if next_step == "backoff":
                try:
                    await asyncio.wait_for(self._closed.wait(), backoff.next_wait())
                    return
                except asyncio.TimeoutError:
                    pass



class _AsyncSessionStream:
    """One OpenSession call, read by a task: the first message carries the id; the read
    after it ends when the stream does."""

    def __init__(self, client: AsyncHostClient, wait_for_ready: bool):
        self.call: Any = client._stub.OpenSession(host_pb2.OpenSessionRequest(),
                                                  metadata=client._metadata,
                                                  wait_for_ready=wait_for_ready)
        self.session_id = 0
        self.ended = False
        self.error: PolyplugError | None = None
        self.changed = asyncio.Event()  # set once the id came, or the stream ended
        self.task = asyncio.get_running_loop().create_task(self._read(client.target))

    async def _read(self, target: str) -> None:
        try:
            async for event in self.call:
                if self.session_id == 0:
                    self.session_id = event.session_id
                    self.changed.set()
        except grpc.aio.AioRpcError as error:
            self.error = error_from_rpc(error, target, None)
        except asyncio.CancelledError:
            pass  # stop(): the session is over
        self.ended = True
        self.changed.set()

    async def stop(self) -> None:
        self.call.cancel()
        await self.task


class _AsyncSession:
    """The asyncio twin of _connection.Session: one OpenSession stream, opened on first use
    and again after it ended; the instances made under it end with it (when the client
    closes, or dies). A caller that times out leaves the stream to the next one."""

    def __init__(self, client: AsyncHostClient):
        self._client = client
        self._stream: _AsyncSessionStream | None = None

    async def id(self, timeout: float, wait_for_ready: bool) -> int:
        """The id of the open session; opens one first if there is none."""
        if self._stream is None or self._stream.ended:
            self._stream = _AsyncSessionStream(self._client, wait_for_ready)
        stream = self._stream
        try:
            await asyncio.wait_for(stream.changed.wait(), timeout)
        except asyncio.TimeoutError:
            raise make_error(grpc.StatusCode.DEADLINE_EXCEEDED,
                             f"no session opened by {self._client.target} within {timeout:g}s",
                             target=self._client.target) from None
        if stream.ended:
            raise stream.error or make_error(grpc.StatusCode.UNAVAILABLE,
                                             "the host ended the session at once",
                                             target=self._client.target)
        return stream.session_id

    async def forget(self, session_id: int) -> None:
        """The host said session `session_id` is not open: the next id() opens another."""
        stream = self._stream
        if stream is None or stream.session_id != session_id:
            return
        self._stream = None
        await stream.stop()

    async def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.stop()


class AsyncHostClient:
    """One grpc.aio channel to a host; see HostClient for what each call does."""

    def __init__(self, target: str | None = None, options: ConnectOptions | None = None, *,
                 auth_token: str | None = None):
        options = options or ConnectOptions()
        if auth_token is not None:
            options = dataclasses.replace(options, auth_token=auth_token)
        self.target = normalize_target(default_host_target() if target is None else target)
        check_options(options)
        self.options = options
        credentials = channel_credentials(options)
        args = channel_arguments(options)
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(self.target, options=args)
        else:
            self._channel = grpc.aio.secure_channel(self.target, credentials, options=args)
        self._stub = host_pb2_grpc.PluginHostStub(self._channel)
        self._metadata: tuple[tuple[str, str], ...] = ()
        if options.auth_token:
            self._metadata = (("authorization", f"Bearer {options.auth_token}"),)
        self._session = _AsyncSession(self)
        self._streams: weakref.WeakSet[AsyncEventStream] = weakref.WeakSet()
        self._closed = False

    async def close(self) -> None:
        """Ends the event streams it made, the instance session (the host destroys the
        instances made through this client) and the channel. Its calls then raise
        CancelledError."""
        self._closed = True
        for stream in list(self._streams):
            await stream.close()
        await self._session.close()
        await self._channel.close()

    def _check_open(self) -> None:
        if self._closed:
            raise make_error(grpc.StatusCode.CANCELLED,
                             f"the AsyncHostClient of {self.target} is closed",
                             target=self.target)

    async def __aenter__(self) -> AsyncHostClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, method: Callable[..., Any], request: Any, timeout: float | None,
                    wait_for_ready: bool) -> Any:
        self._check_open()
        deadline = deadline_of(timeout, self.options)
        try:
            return await method(request, timeout=deadline, metadata=self._metadata,
                                wait_for_ready=wait_for_ready)
        except grpc.aio.AioRpcError as error:
            raise error_from_rpc(error, self.target, deadline) from None

    async def reload(self, bundle: str, *, expected_sha256: str = "", request_id: str = "",
                     timeout: float | None = None,
                     wait_for_ready: bool = False) -> host_pb2.ReloadResponse:
        """HostClient.reload."""
        request = host_pb2.ReloadRequest(expected_sha256=expected_sha256, request_id=request_id)
        if "/" in bundle:
            request.path = bundle
        else:
            request.name = bundle
        return await self._call(self._stub.Reload, request, timeout, wait_for_ready)

    async def load_bundle(self, path: str, *, request_id: str = "",
                          timeout: float | None = None,
                          wait_for_ready: bool = False) -> host_pb2.LoadBundleResponse:
        """HostClient.load_bundle."""
        return await self._call(self._stub.LoadBundle,
                                host_pb2.LoadBundleRequest(path=path, request_id=request_id),
                                timeout, wait_for_ready)

    async def unload_bundle(self, name: str, *, cascade: bool = False, request_id: str = "",
                            timeout: float | None = None,
                            wait_for_ready: bool = False) -> host_pb2.UnloadBundleResponse:
        """HostClient.unload_bundle."""
        return await self._call(
            self._stub.UnloadBundle,
            host_pb2.UnloadBundleRequest(name=name, cascade=cascade, request_id=request_id),
            timeout, wait_for_ready)

    async def push_bundle(self, directory: str | Path, *, request_id: str = "",
                          timeout: float | None = None,
                          wait_for_ready: bool = False) -> host_pb2.PushBundleResponse:
        """HostClient.push_bundle."""
        self._check_open()
        # Listing, reading and hashing the files block: they run on threads, not the loop.
        upload = await asyncio.to_thread(Upload, Path(directory), request_id)
        deadline = deadline_of(timeout, self.options)

        async def messages() -> AsyncGenerator[host_pb2.PushBundleRequest, None]:
            produce = upload.messages()

            def step() -> host_pb2.PushBundleRequest | None:
                return next(produce, None)

            while (message := await asyncio.to_thread(step)) is not None:
                yield message

        try:
            response: host_pb2.PushBundleResponse = await asyncio.wait_for(
                self._stub.PushBundle(messages(), timeout=deadline,
                                      metadata=self._metadata, wait_for_ready=wait_for_ready),
                deadline)  # bounded here: see Upload.too_slow
        except asyncio.TimeoutError:
            raise Upload.too_slow(self.target, deadline) from None
        except grpc.aio.AioRpcError as error:
            raise upload.error_of(error, self.target, deadline) from None
        if upload.error is not None:
            raise upload.error
        return response

    async def get_operation(self, request_id: str, *, wait: bool = False,
                            timeout: float | None = None) -> host_pb2.Operation:
        """HostClient.get_operation."""
        return await self._call(self._stub.GetOperation,
                                host_pb2.GetOperationRequest(request_id=request_id, wait=wait),
                                timeout, False)

    async def find_contract(self, contract: str, min_version: int = 0, *,
                            timeout: float | None = None,
                            wait_for_ready: bool = False) -> host_pb2.ContractHandle:
        """HostClient.find_contract."""
        return await self._call(
            self._stub.FindContract,
            host_pb2.FindContractRequest(name=contract, min_version=min_version), timeout,
            wait_for_ready)

    async def list_bundles(self, *, timeout: float | None = None,
                           wait_for_ready: bool = False) -> host_pb2.ListBundlesResponse:
        """HostClient.list_bundles."""
        return await self._call(self._stub.ListBundles, host_pb2.ListBundlesRequest(), timeout,
                                wait_for_ready)

    async def list_contracts(self, bundle: str = "", *, timeout: float | None = None,
                             wait_for_ready: bool = False) -> host_pb2.ListContractsResponse:
        """HostClient.list_contracts."""
        return await self._call(self._stub.ListContracts,
                                host_pb2.ListContractsRequest(bundle=bundle), timeout,
                                wait_for_ready)

    async def get_host_info(self, *, timeout: float | None = None,
                            wait_for_ready: bool = False) -> host_pb2.HostInfo:
        """HostClient.get_host_info."""
        return await self._call(self._stub.GetHostInfo, host_pb2.GetHostInfoRequest(), timeout,
                                wait_for_ready)

    async def echo(self, payload: bytes | str = b"", *, timeout: float | None = None,
                   wait_for_ready: bool = False) -> bytes:
        """HostClient.echo."""
        response = await self._call(self._stub.Echo, host_pb2.EchoRequest(payload=_bytes(payload)),
                                    timeout, wait_for_ready)
        return bytes(response.payload)

    async def check_health(self, service: str = "", *, timeout: float | None = None,
                           wait_for_ready: bool = False) -> ServingStatus:
        """HostClient.check_health."""
        self._check_open()
        deadline = deadline_of(timeout, self.options)
        method = self._channel.unary_unary(_health.CHECK_METHOD,
                                           request_serializer=_health.encode_request,
                                           response_deserializer=_health.decode_status)
        try:
            status: int = await method(service, timeout=deadline, metadata=self._metadata,
                                       wait_for_ready=wait_for_ready)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return ServingStatus.SERVICE_UNKNOWN
            raise error_from_rpc(error, self.target, deadline) from None
        return ServingStatus(status) if status in ServingStatus._value2member_map_ else \
            ServingStatus.UNKNOWN

    async def create_instance(self, contract: str | host_pb2.ContractHandle,
                              args: bytes | str = b"", min_version: int = 0, *,
                              timeout: float | None = None,
                              wait_for_ready: bool = False) -> host_pb2.InstanceRef:
        """HostClient.create_instance: under this client's session."""
        self._check_open()
        deadline = deadline_of(timeout, self.options)
        request = host_pb2.CreateInstanceRequest(args=_bytes(args))
        if isinstance(contract, str):
            request.contract = contract
            request.min_version = min_version
        else:
            request.handle.CopyFrom(contract)
        for attempt in range(2):
            request.session_id = await self._session.id(deadline, wait_for_ready)
            try:
                made: host_pb2.InstanceRef = await self._call(
                    self._stub.CreateInstance, request, timeout, wait_for_ready)
                return made
            except PolyplugError as error:
                if attempt == 1 or error.reason != "LEASE_EXPIRED":
                    raise
                await self._session.forget(request.session_id)  # it ended meanwhile
        raise AssertionError("unreachable")

    async def invoke(self, instance: host_pb2.InstanceRef, method: str,
                     request: bytes | str = b"", *, timeout: float | None = None,
                     wait_for_ready: bool = False) -> host_pb2.InvokeResponse:
        """HostClient.invoke."""
        return await self._call(
            self._stub.Invoke,
            host_pb2.InvokeRequest(instance=instance, method=method, request=_bytes(request)),
            timeout, wait_for_ready)

    async def destroy_instance(self, instance: host_pb2.InstanceRef, *,
                               timeout: float | None = None,
                               wait_for_ready: bool = False) -> None:
        """HostClient.destroy_instance."""
        await self._call(self._stub.DestroyInstance,
                         host_pb2.DestroyInstanceRequest(instance=instance), timeout,
                         wait_for_ready)

    async def invoke_once(self, contract: str, method: str, request: bytes | str = b"",
                          min_version: int = 0, *, timeout: float | None = None,
                          wait_for_ready: bool = False) -> host_pb2.InvokeResponse:
        """HostClient.invoke_once."""
        return await self._call(
            self._stub.Invoke,
            host_pb2.InvokeRequest(contract=contract, min_version=min_version, method=method,
                                   request=_bytes(request)), timeout, wait_for_ready)

    def events(self, *, bundle_names: tuple[str, ...] = (), resume_after: Cursor | None = None,
               strict_resume: bool = False, heartbeat: float = 10.0,
               synthesize_transitions: bool = True) -> AsyncEventStream:
        """HostClient.events, as an async iterator: `async for item in host.events()`."""
        self._check_open()
        stream = AsyncEventStream(self, SubscribeOptions(tuple(bundle_names), resume_after,
                                                         strict_resume, heartbeat,
                                                         synthesize_transitions))
        self._streams.add(stream)
        return stream
