"""Conversations: one user's chat threads, and the queries behind ``/conversations``.

A conversation row holds its settings and title; its turns are not stored again. The API
stays stateless (each call sends the whole thread as ``messages``), so the thread is the
latest linked call's messages plus its answer: regenerate and edit-and-resend replace the
tail simply by being the latest call. The writer links calls and updates ``updated_at``
and the default title in its batch (``record_calls``), never on the chat hot path.

Every query is scoped to the caller's ``user_id``: another user's conversation is not found.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from storage.models import Conversation, InferenceRequest, utcnow
from storage.paging import like_pattern, newest_first, page_of
from storage.reads import ReadEngine

C = Conversation.__table__
T = InferenceRequest.__table__
TITLE_CHARS = 80
# Turns shown with their call's model and status: enough for any real thread; older calls
# of a very long conversation only lose that detail, not their text.
MAX_CALLS_READ = 500
HIDDEN_ROLES = ("system", "developer")
SETTINGS = ("title", "system_prompt", "temperature", "max_tokens")
SUMMARY = (C.c.id, C.c.title, C.c.system_prompt, C.c.temperature, C.c.max_tokens,
           C.c.created_at, C.c.updated_at)


def content_text(content: Any) -> str:
    """A message's content as plain text (the text parts of a multi-part content)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content
                        if isinstance(p, dict) and p.get("type") == "text")
    return ""


def title_from(messages: list[dict[str, Any]]) -> str | None:
    """The default title: the first user message, cut on a word boundary."""
    for msg in messages:
        if isinstance(msg, dict) and msg.get("role") == "user":
            text = " ".join(content_text(msg.get("content")).split())
            if not text:
                return None
            if len(text) <= TITLE_CHARS:
                return text
            cut = text[:TITLE_CHARS - 1]
            # Back to the last space, unless that leaves too little (one very long word).
            space = cut.rfind(" ")
            if space >= TITLE_CHARS // 2:
                cut = cut[:space]
            return cut.rstrip(" ,.;:-") + "…"
    return None


async def record_calls(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """In the writer's transaction, after it inserted ``rows``: each linked call touches its
    conversation (``updated_at``; the title when it has none yet), and a call whose
    conversation was deleted while it ran is deleted too, as its conversation's turns were."""
    linked = [row for row in rows if row.get("conversation_id") is not None]
    if not linked:
        return
    latest: dict[Any, dict[str, Any]] = {}
    for row in linked:  # one update per conversation, with its latest call's values
        latest[row["conversation_id"]] = {
            "cid": row["conversation_id"],
            "at": row.get("completed_at") or row["created_at"],
            "title": latest.get(row["conversation_id"], {}).get("title")
            or title_from(row.get("messages") or [])}
    # Locked in id order: two writers (--workers) never wait on each other in a cycle.
    # The delete of a conversation locks its row first (ConversationStore.delete), so
    # either it sees this transaction's calls, or the orphan check below sees it gone.
    await conn.execute(
        sa.update(C).where(C.c.id == sa.bindparam("cid"))
        .values(updated_at=sa.bindparam("at"),
                title=sa.func.coalesce(C.c.title, sa.bindparam("title"))),
        [latest[key] for key in sorted(latest, key=str)])
    await conn.execute(sa.delete(T).where(
        T.c.id.in_([row["id"] for row in linked]),
        ~sa.exists().where(C.c.id == T.c.conversation_id)))


@dataclass(frozen=True, slots=True)
class Turn:
    """One message of a thread as the user sees it."""

    role: str
    content: str
    model: str | None = None
    status: str | None = None
    request_id: str | None = None
    created_at: datetime | None = None


class ConversationStore:
    """Writes and the chat path's ownership check on the primary; the views (a conversation,
    the list, a thread) through ``reads``, a caught-up replica when there is one."""

    def __init__(self, engine: AsyncEngine, reads: ReadEngine | None = None) -> None:
        self._engine = engine
        self._reads = reads or ReadEngine(engine)

    async def create(self, user_id: uuid.UUID, values: dict[str, Any]) -> sa.Row[Any]:
        now = utcnow()
        row = {"id": uuid.uuid4(), "user_id": user_id, "created_at": now, "updated_at": now,
               **dict.fromkeys(SETTINGS), **values}
        async with self._engine.begin() as conn:
            await conn.execute(sa.insert(C).values(**row))
        return await self.get(user_id, row["id"])  # type: ignore[return-value]

    async def get(self, user_id: uuid.UUID, cid: uuid.UUID) -> sa.Row[Any] | None:
        async def read(conn: AsyncConnection) -> sa.Row[Any] | None:
            return (await conn.execute(
                sa.select(*SUMMARY).where(C.c.id == cid, C.c.user_id == user_id))).first()

        return await self._reads.run(read)

    async def owns(self, user_id: uuid.UUID, cid: uuid.UUID) -> bool:
        """The one check a chat call with the header costs."""
        async with self._engine.connect() as conn:
            return (await conn.execute(sa.select(C.c.id).where(
                C.c.id == cid, C.c.user_id == user_id))).first() is not None

    async def position(self, user_id: uuid.UUID, cid: uuid.UUID
                       ) -> tuple[datetime, uuid.UUID] | None:
        """Where a conversation stands in the list (for ``after``)."""
        row = await self.get(user_id, cid)
        return (row.updated_at, row.id) if row is not None else None

    async def page(self, user_id: uuid.UUID, text: str | None, limit: int,
                   after: tuple[datetime, uuid.UUID] | None = None
                   ) -> tuple[list[sa.Row[Any]], bool]:
        """Newest-updated first, keyset-paginated on (updated_at, id)."""
        stmt = sa.select(*SUMMARY).where(C.c.user_id == user_id)
        if text:
            pattern = like_pattern(text)
            # The text of its calls: what was asked (prompt) and answered (response).
            turns = sa.exists().where(
                T.c.conversation_id == C.c.id, T.c.user_id == user_id,
                sa.or_(T.c.prompt.ilike(pattern, escape="\\"),
                       T.c.response.ilike(pattern, escape="\\")))
            stmt = stmt.where(sa.or_(C.c.title.ilike(pattern, escape="\\"), turns))
        stmt = newest_first(stmt, C.c.updated_at, C.c.id, after, limit)

        async def read(conn: AsyncConnection) -> list[sa.Row[Any]]:
            return list((await conn.execute(stmt)).all())

        return page_of(await self._reads.run(read), limit)

    async def update(self, user_id: uuid.UUID, cid: uuid.UUID,
                     values: dict[str, Any]) -> sa.Row[Any] | None:
        async with self._engine.begin() as conn:
            result = await conn.execute(sa.update(C).where(
                C.c.id == cid, C.c.user_id == user_id).values(**values, updated_at=utcnow()))
        if result.rowcount != 1:
            return None
        return await self.get(user_id, cid)

    async def delete(self, user_id: uuid.UUID, cid: uuid.UUID) -> bool:
        """The conversation and its calls' rows (usage counters are kept apart and stay)."""
        async with self._engine.begin() as conn:
            # The conversation first: its row lock orders this against the writer.
            result = await conn.execute(
                sa.delete(C).where(C.c.id == cid, C.c.user_id == user_id))
            if result.rowcount != 1:
                return False
            await conn.execute(
                sa.delete(T).where(T.c.conversation_id == cid, T.c.user_id == user_id))
        return True

    async def thread(self, user_id: uuid.UUID, cid: uuid.UUID) -> list[Turn]:
        """The thread of the latest call: its messages (minus system and developer) and
        its answer; earlier answers carry the model and status of the call that gave them."""
        calls = (sa.select(T.c.id, T.c.request_id, T.c.model, T.c.status, T.c.response,
                           T.c.tool_calls, T.c.created_at, T.c.completed_at)
                 .where(T.c.conversation_id == cid, T.c.user_id == user_id)
                 .order_by(T.c.created_at.desc(), T.c.id.desc()).limit(MAX_CALLS_READ))

        async def read(conn: AsyncConnection) -> list[Turn]:
            rows = list((await conn.execute(calls)).all())
            if not rows:
                return []
            latest = rows[0]
            messages = (await conn.execute(
                sa.select(T.c.messages).where(T.c.id == latest.id))).scalar_one()
            return _turns(messages or [], latest, rows[1:])

        return await self._reads.run(read)


def _turns(messages: list[dict[str, Any]], latest: sa.Row[Any],
           earlier: list[sa.Row[Any]]) -> list[Turn]:
    # An earlier answer is matched to the latest call that gave exactly that text.
    answered: dict[str, sa.Row[Any]] = {}
    for row in reversed(earlier):  # oldest first: later calls win
        if row.response:
            answered[row.response] = row
    out: list[Turn] = []
    for msg in messages:
        role = msg.get("role") if isinstance(msg, dict) else None
        if role not in ("user", "assistant"):
            continue  # system/developer live in the conversation; tool turns are not shown
        text = content_text(msg.get("content"))
        call = answered.get(text) if role == "assistant" else None
        if call is not None:
            # The prompt it answered was sent when that call started.
            if out and out[-1].role == "user":
                out[-1] = Turn("user", out[-1].content, created_at=call.created_at)
            out.append(Turn("assistant", text, call.model, call.status, call.request_id,
                            call.completed_at))
        else:
            out.append(Turn(role, text))
    if out and out[-1].role == "user":
        out[-1] = Turn("user", out[-1].content, created_at=latest.created_at)
    # The latest call's answer: shown unless it was cancelled before any of it arrived.
    answer = latest.response or ""
    if answer or latest.tool_calls or latest.status != "cancelled":
        out.append(Turn("assistant", answer, latest.model, latest.status, latest.request_id,
                        latest.completed_at))
    return out
