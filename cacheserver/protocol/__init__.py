"""The AsymCache wire protocol: every message, and the only code that touches msgpack.

``wire_types.py`` holds the field types and their decoders, the limits and
:class:`ProtocolError`; ``framing.py`` the msgpack header frame; ``wire.py`` the message base,
its ``@message`` decorator and decoding; ``messages.py`` one request and one reply dataclass per
op; ``sockets.py`` the client's socket roles. Torch-free; engines and tools import it.

Usage::

    frames = Lookup(keys=[k1, k2]).to_wire(request_id=7)     # list of bytes-like frames
    rid, req = decode_request(frames)                         # the daemon side
    rid, rep = decode_reply(reply_frames)                     # LookupReply or ErrorReply
"""

from __future__ import annotations

from asymcache.cacheserver.protocol.framing import PROTOCOL_VERSION, Buffer
from asymcache.cacheserver.protocol.messages import (
    Ack,
    Allocate,
    AllocateReply,
    Cancel,
    CancelReply,
    Commit,
    CommitReply,
    Flush,
    FlushReply,
    Forget,
    ForgetReply,
    Get,
    GetReply,
    Hello,
    HelloReply,
    Lookup,
    LookupReply,
    Pin,
    Ping,
    PingReply,
    PinReply,
    Promote,
    PromoteReply,
    Put,
    PutReply,
    Release,
    ReleaseReply,
    Stats,
    StatsReply,
    Unpin,
    UnpinReply,
    Verify,
    VerifyReply,
)
from asymcache.cacheserver.protocol.sockets import HEARTBEAT_SUFFIX
from asymcache.cacheserver.protocol.wire import (
    ErrorReply,
    Message,
    Reply,
    decode_reply,
    decode_request,
    request_ops,
)
from asymcache.cacheserver.protocol.wire_types import (
    ENGINE_ID_MAX_BYTES,
    FINGERPRINT_MAX_BYTES,
    KEY_BYTES,
    ROUTING_ID_MAX_BYTES,
    ROUTING_ID_PREFIX,
    SALT_MAX_BYTES,
    BlockRef,
    ErrorCode,
    Limits,
    ProtocolError,
    Where,
    identifier_problem,
)

__all__ = [
    "ENGINE_ID_MAX_BYTES",
    "FINGERPRINT_MAX_BYTES",
    "HEARTBEAT_SUFFIX",
    "KEY_BYTES",
    "PROTOCOL_VERSION",
    "ROUTING_ID_MAX_BYTES",
    "ROUTING_ID_PREFIX",
    "SALT_MAX_BYTES",
    "Ack",
    "Allocate",
    "AllocateReply",
    "BlockRef",
    "Buffer",
    "Cancel",
    "CancelReply",
    "Commit",
    "CommitReply",
    "ErrorCode",
    "ErrorReply",
    "Flush",
    "FlushReply",
    "Forget",
    "ForgetReply",
    "Get",
    "GetReply",
    "Hello",
    "HelloReply",
    "Limits",
    "Lookup",
    "LookupReply",
    "Message",
    "Pin",
    "PinReply",
    "Ping",
    "PingReply",
    "Promote",
    "PromoteReply",
    "ProtocolError",
    "Put",
    "PutReply",
    "Release",
    "ReleaseReply",
    "Reply",
    "Stats",
    "StatsReply",
    "Unpin",
    "UnpinReply",
    "Verify",
    "VerifyReply",
    "Where",
    "decode_reply",
    "decode_request",
    "identifier_problem",
    "request_ops",
]
