"""PushBundle's upload: a bundle directory as the stream of messages the host takes.

The files are those core::ListBundleFiles lists (every regular file below the directory,
sorted by their '/'-separated path, byte-wise); a symlink, FIFO, socket or device, or a
name that is not UTF-8, is refused. The digests follow the bytes, so each file is read
once, and the bundle digest is the canonical one bundle.sig signs (docs/SIGNING.md).
"""

from __future__ import annotations

import hashlib
import os
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import grpc

from polyplug.host.v1 import host_pb2
from polyplug_client.errors import (FailedPreconditionError, InvalidArgumentError,
                                    PolyplugError, error_from_rpc, make_error)

# What one message carries at most: well under the host's 4 MiB default.
CHUNK_BYTES = 1 << 20
SIGNATURE_FILE = "bundle.sig"
_DIGEST_TAG = b"polyplug-bundle-sig\0"
_DIGEST_ALGORITHM_SHA256 = b"\x01"


def _invalid(message: str) -> InvalidArgumentError:
    return InvalidArgumentError(grpc.StatusCode.INVALID_ARGUMENT, message)


@dataclass(frozen=True)
class BundleFile:
    """One file of a bundle: its '/'-separated relative path, size and mode, and that path
    as the file system's bytes (`local`)."""

    path: str
    size: int
    executable: bool
    local: bytes


def list_bundle_files(root: Path) -> list[BundleFile]:
    """The files of the bundle in `root`, in the order they are sent. Every directory is
    opened relative to its parent without following symlinks, so that one swapped for a
    symlink meanwhile is refused rather than followed, as core::ListBundleFiles does. Names
    are taken as the file system's bytes and must be UTF-8, whatever the locale."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    try:
        top = os.open(root, flags)
    except OSError as error:
        raise _invalid(f"cannot push: {root}: cannot open it as a directory: "
                       f"{error.strerror}") from None
    files: list[BundleFile] = []

    def walk(dir_fd: int, prefix: str, local_prefix: bytes) -> None:
        try:
            with os.scandir(dir_fd) as listing:
                names = [entry.name for entry in listing]
        except OSError as error:
            raise _invalid(f"cannot push: {root}: cannot list {prefix or 'it'}: "
                           f"{error.strerror}") from None
        for name in names:
            raw = os.fsencode(name)  # the bytes on disk, whatever the locale decoded
            local = local_prefix + b"/" + raw if local_prefix else raw
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise _invalid(f"cannot push: {root}: {local!r} has a name that is not UTF-8, "
                               "which cannot be signed or sent") from None
            relative = f"{prefix}/{text}" if prefix else text
            try:
                info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if stat.S_ISDIR(info.st_mode):
                    child = os.open(name, flags | os.O_NOFOLLOW, dir_fd=dir_fd)
                    try:
                        walk(child, relative, local)
                    finally:
                        os.close(child)
                    continue
            except OSError as error:
                raise _invalid(f"cannot push: {root}: cannot read '{relative}': "
                               f"{error.strerror}") from None
            if stat.S_ISREG(info.st_mode):
                files.append(BundleFile(relative, info.st_size,
                                        bool(info.st_mode & stat.S_IXUSR), local))
            else:
                kind = "a symlink" if stat.S_ISLNK(info.st_mode) else "not a regular file"
                raise _invalid(f"cannot push: {root}: '{relative}' is {kind}; a bundle holds "
                               "regular files and directories only")

    try:
        walk(top, "", b"")
    finally:
        os.close(top)
    files.sort(key=lambda f: f.path.encode("utf-8"))
    return files


def bundle_name_of(root: Path) -> str:
    """The bundle's name, as its manifest.toml says (the host checks it again)."""
    manifest = root / "manifest.toml"
    try:
        with open(manifest, "rb") as f:
            name = tomllib.load(f).get("name")
    except FileNotFoundError:
        raise _invalid(f"cannot push {root}: no manifest.toml in it") from None
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise _invalid(f"cannot push {root}: {manifest}: {error}") from None
    if not isinstance(name, str) or not name:
        raise _invalid(f"cannot push {root}: {manifest}: no 'name' string")
    return name


def canonical_bundle_digest(file_sha256: dict[str, bytes]) -> str:
    """The canonical digest of hashed files (bundle.sig left out by the caller), hex."""
    digest = hashlib.sha256()
    digest.update(_DIGEST_TAG)
    digest.update(_DIGEST_ALGORITHM_SHA256)
    digest.update(len(file_sha256).to_bytes(8, "little"))
    for path in sorted(file_sha256, key=lambda p: p.encode("utf-8")):
        digest.update(path.encode("utf-8"))
        digest.update(b"\0")
        digest.update(file_sha256[path])
    return digest.hexdigest()


class Upload:
    """One upload of the bundle in `root`. The constructor lists the files and reads the
    manifest's name (InvalidArgumentError at once for a bundle that cannot be sent);
    messages() then produces the stream. gRPC swallows an exception raised while it
    iterates the requests, so a file that cannot be read or changes meanwhile ends the
    stream early and is kept in `error`, for the caller to raise once the call ended."""

    def __init__(self, root: Path, request_id: str):
        self.root = root
        self.files = list_bundle_files(root)
        self.header = host_pb2.PushBundleHeader(bundle_name=bundle_name_of(root),
                                                request_id=request_id)
        for f in self.files:
            self.header.files.append(
                host_pb2.PushedFile(path=f.path, size=f.size, executable=f.executable))
        self.error: InvalidArgumentError | FailedPreconditionError | None = None

    def error_of(self, call_error: Any, target: str, deadline: float) -> PolyplugError:
        """What a push that ended with `call_error` (a grpc.RpcError or AioRpcError) raises:
        the file's own error when reading it ended the upload, else the host's answer."""
        if self.error is not None:
            return self.error
        return error_from_rpc(call_error, target, deadline)

    @staticmethod
    def too_slow(target: str, deadline: float) -> PolyplugError:
        """The error of a push the host did not take within its deadline. grpcio 1.51 does
        not end a client-streaming call at its deadline while the host reads nothing (a
        full window: seen with a stopped host), so the callers bound the wait themselves."""
        return make_error(grpc.StatusCode.DEADLINE_EXCEEDED,
                          f"polyplug-host at {target} did not take the upload within "
                          f"{deadline:g}s", target=target)

    def messages(self) -> Iterator[host_pb2.PushBundleRequest]:
        """The header, the files' bytes in chunks, then the digests."""
        try:
            yield from self._messages()
        except (InvalidArgumentError, FailedPreconditionError) as error:
            self.error = error

    def _messages(self) -> Iterator[host_pb2.PushBundleRequest]:
        yield host_pb2.PushBundleRequest(header=self.header)
        chunk = bytearray()
        hashes: list[bytes] = []
        for f in self.files:
            path = self.root / f.path
            sha = hashlib.sha256()
            try:
                fd = os.open(os.path.join(os.fsencode(self.root), f.local),
                             os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
                with os.fdopen(fd, "rb", buffering=0) as stream:
                    before = os.fstat(stream.fileno())
                    left = f.size
                    while left > 0:
                        data = stream.read(min(left, CHUNK_BYTES - len(chunk)))
                        if not data:
                            break
                        sha.update(data)
                        chunk += data
                        left -= len(data)
                        if len(chunk) == CHUNK_BYTES:
                            yield host_pb2.PushBundleRequest(data=bytes(chunk))
                            chunk.clear()
                    after = os.fstat(stream.fileno())
            except OSError as error:
                raise _invalid(f"cannot read {path}: {error.strerror}") from None
            # A file rewritten while it was read would arrive torn, with a matching digest.
            if (left != 0 or after.st_size != before.st_size
                    or after.st_mtime_ns != before.st_mtime_ns):
                raise FailedPreconditionError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"{path} changed while it was being pushed (it is now {after.st_size} "
                    f"bytes, was {f.size}); push again once it is built")
            hashes.append(sha.digest())
        if chunk:
            yield host_pb2.PushBundleRequest(data=bytes(chunk))
        signed = {f.path: h for f, h in zip(self.files, hashes) if f.path != SIGNATURE_FILE}
        yield host_pb2.PushBundleRequest(digests=host_pb2.PushBundleDigests(
            file_sha256=[h.hex() for h in hashes],
            bundle_digest=canonical_bundle_digest(signed)))
