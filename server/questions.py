"""Raised hands and questions: each room's list, who may add to it, and who hears of changes.

A classroom raises its hand (a question with no text) or types a question; the teacher console
sees it at once and marks it answered, which the classroom sees. Everything is bounded: the
text length, how fast one classroom may ask (a token bucket per classroom), how many questions
a room keeps, and how many rooms are remembered once nobody is connected to them. When a room's
recording finishes, the recording service takes the room's questions into the lesson's manifest.

No I/O here: listeners are plain callbacks (the WebSocket channel registers one per page).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace

from server.errors import BadRequest, ClassCastError, NotFound

logger = logging.getLogger(__name__)

MAX_TEXT_CHARS = 300
MAX_QUESTIONS_PER_ROOM = 200
BURST = 3  # questions a classroom may send at once…
REFILL_S = 10.0  # …and one more every this many seconds
MAX_IDLE_ROOMS = 500  # rooms remembered with nobody connected (oldest forgotten first)


class TooManyQuestions(ClassCastError):
    status = 429
    code = "too_many_questions"


@dataclass(frozen=True)
class Question:
    id: int
    classroom: str  # the classroom token's subject
    text: str  # "" for a raised hand without a question
    asked_at: float  # Unix time
    answered_at: float | None = None

    @property
    def answered(self) -> bool:
        return self.answered_at is not None

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "classroom": self.classroom, "text": self.text,
                "asked_at": self.asked_at, "answered": self.answered,
                "answered_at": self.answered_at}


Listener = Callable[[str, Question], None]  # (event "asked" | "answered", question)


@dataclass
class _Bucket:
    tokens: float
    at: float


class RoomQuestions:
    """One room's questions (oldest first), its rate limits and its listeners."""

    def __init__(self, room: str, clock: Callable[[], float]) -> None:
        self.room = room
        self._clock = clock
        self._questions: OrderedDict[int, Question] = OrderedDict()
        self._buckets: dict[str, _Bucket] = {}
        self._next_id = 1
        self.listeners: list[Listener] = []

    @property
    def next_id(self) -> int:
        """The id the next question will get."""
        return self._next_id

    @property
    def questions(self) -> tuple[Question, ...]:
        return tuple(self._questions.values())

    def ask(self, classroom: str, text: str) -> Question:
        text = " ".join(text.split())  # one line, no runs of spaces
        if len(text) > MAX_TEXT_CHARS:
            raise BadRequest(f"a question has at most {MAX_TEXT_CHARS} characters; this one "
                             f"has {len(text)}")
        self._take_token(classroom)
        question = Question(self._next_id, classroom, text, time.time())
        self._next_id += 1
        self._questions[question.id] = question
        while len(self._questions) > MAX_QUESTIONS_PER_ROOM:
            self._questions.popitem(last=False)
        logger.info("room %s: classroom %s %s", self.room, classroom,
                    "asked a question" if text else "raised its hand")
        self._tell("asked", question)
        return question

    def answer(self, question_id: int) -> Question:
        question = self._questions.get(question_id)
        if question is None:
            raise NotFound(f"room {self.room!r} has no question {question_id}")
        if not question.answered:
            question = replace(question, answered_at=time.time())
            self._questions[question_id] = question
            self._tell("answered", question)
        return question

    def take(self, since: float) -> tuple[Question, ...]:
        """The questions asked at or after `since`, removed from the room (a lesson's)."""
        taken = tuple(q for q in self._questions.values() if q.asked_at >= since)
        for q in taken:
            del self._questions[q.id]
        return taken

    def _take_token(self, classroom: str) -> None:
        now = self._clock()
        bucket = self._buckets.get(classroom)
        if bucket is None:
            bucket = self._buckets[classroom] = _Bucket(float(BURST), now)
        bucket.tokens = min(float(BURST), bucket.tokens + (now - bucket.at) / REFILL_S)
        bucket.at = now
        if bucket.tokens < 1:
            wait_s = (1 - bucket.tokens) * REFILL_S
            raise TooManyQuestions(f"too many questions at once; wait {wait_s:.0f} s",
                                   headers={"Retry-After": str(max(1, round(wait_s)))})
        bucket.tokens -= 1

    def _tell(self, event: str, question: Question) -> None:
        for listener in list(self.listeners):
            try:
                listener(event, question)
            except Exception:
                logger.exception("room %s: a question listener failed", self.room)


class QuestionBoard:
    """Every room's questions. Rooms with listeners are kept; idle ones up to a bound."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._rooms: OrderedDict[str, RoomQuestions] = OrderedDict()

    def room(self, name: str) -> RoomQuestions:
        room = self._rooms.get(name)
        if room is None:
            room = self._rooms[name] = RoomQuestions(name, self._clock)
            self._forget_idle()
        self._rooms.move_to_end(name)
        return room

    def take(self, name: str, since: float) -> tuple[Question, ...]:
        room = self._rooms.get(name)
        return room.take(since) if room is not None else ()

    def _forget_idle(self) -> None:
        idle = [name for name, r in self._rooms.items() if not r.listeners]
        for name in idle[:max(0, len(idle) - MAX_IDLE_ROOMS)]:
            del self._rooms[name]

    def __len__(self) -> int:
        return len(self._rooms)
