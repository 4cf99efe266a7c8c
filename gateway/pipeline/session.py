"""One voice session: VAD -> STT -> LLM -> TTS -> playout, stages on bounded queues.

The VAD stage runs inline, in the transport's call that hands over each audio chunk: it
costs microseconds per frame, and a queue hop to a task of its own cost more than the
VAD itself (a task wake-up per 20 ms frame per session). The other stages are tasks.

Queues and their overflow policies:

- ``stt`` (transcription jobs): interim jobs are dropped when full (a newer one will
  come); a final or pause job makes room by dropping a queued interim/pause job, and
  only when finals fill the queue (the STT is stuck) the oldest final is dropped, with
  an error to the client.
- ``llm`` (user turns): a newer turn supersedes queued older ones.
- ``tts`` (sentences) and ``playout`` (synthesised audio): the producer waits for
  room, which paces the LLM to the speech; on barge-in both are emptied.

Every item carries its turn id; each stage drops items of a turn older than
``current_turn``. That, plus purging the outbox, is what makes barge-in exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from gateway.audio import pcm
from gateway.providers import visemes
from gateway.providers.base import Message, ProviderError, Speech

from . import events as ev
from . import interruptions
from .history import History
from .interruptions import InterruptionSettings, Overlap
from .outbox import AudioOut, Outbox
from .overlap import OverlapChecks
from .pacing import Pacer
from .pauses import ReplyPauses
from .prompt import system_prompt
from .reply import (
    ClientCalls,
    Filler,
    Reply,
    ReplyItem,
    ReplyRequest,
    SpokenSentence,
    Token,
    ToolEvent,
)
from .runtime import Runtime
from .session_items import (
    EndOfReply,
    Response,
    Segment,
    Sentence,
    SessionSettings,
    SttJob,
    UserTurn,
    VadOverrides,
    tool_event,
    turn_record,
    turn_times,
)
from .speculation import FirstSpeech, request_for
from .text import SpokenSegment, clean, heard_text
from .transcriber import Transcriber
from .turn_checks import TurnChecks, turn_settings
from .turns import (
    BargeIn,
    Endpointer,
    EndpointerSettings,
    InterimAudio,
    OverlapAudio,
    PauseAudio,
    SpeechStarted,
    SpeechStopped,
    TurnCheck,
    TurnEvent,
)
from .vad_input import PIPELINE_RATE, VadInput


class Session:
    def __init__(
        self,
        runtime: Runtime,
        settings: SessionSettings,
        outbox: Outbox,
        *,
        session_id: str,
        conversation_id: str,
        history: Sequence[Message] | None = None,
    ) -> None:
        cfg = runtime.cfg
        self.runtime = runtime
        self.cfg = cfg
        self.session_id = session_id
        self.conversation_id = conversation_id
        self.outbox = outbox
        self.log = structlog.get_logger("gateway.session").bind(session_id=session_id)
        self.history = History(history or ())
        self.settings = settings
        self.turn_checks = TurnChecks(runtime, self._verdict, self.log)
        self.overlaps = OverlapChecks(self._decode_overlap, self._overlap, self.log)
        self.pauses = ReplyPauses(self.emit, _ms)
        self._yielded_to = 0  # the overlapping utterance that interrupted the last reply
        self._turn_ended_ms = float("-inf")  # audio time the last user turn ended
        self.endpointer = self._make_endpointer(1)
        self._vad_changed = False
        # VAD stage state, made at the first audio (a ``start`` may change the rate).
        self._input: VadInput | None = None
        q = cfg.queues
        self.first_speech = FirstSpeech(self.log)
        self.stt = Transcriber(q.stt, self._decode, self.emit, self._user_said,
                               self._provider_error, self.turn_checks, self.log,
                               self._speculate if cfg.turn.speculate else None,
                               lambda: runtime.quick_decodes(self.settings.assistant_id))
        self.stt_q = self.stt.q
        self.llm_q: asyncio.Queue[UserTurn] = asyncio.Queue(q.llm)
        self.tts_q: asyncio.Queue[Sentence | EndOfReply] = asyncio.Queue(q.tts)
        self.play_q: asyncio.Queue[Segment | EndOfReply] = asyncio.Queue(q.playout)
        self.current_turn = 0
        self.response: Response | None = None
        self._gen_task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # Called with a dict per finished turn (completed or interrupted): storage hook.
        self.on_turn_end: Callable[[dict[str, Any]], None] | None = None
        self.turns_completed = 0

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        stages = {"stt": self.stt.run, "llm": self._llm_stage, "tts": self._tts_stage,
                  "playout": self._playout_stage}
        for name, stage in stages.items():
            task = asyncio.create_task(stage(), name=f"{self.session_id}:{name}")
            task.add_done_callback(self._stage_done)
            self._tasks.append(task)

    def _stage_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._crashed(task.get_name(), exc)

    def _crashed(self, stage: str, exc: BaseException) -> None:
        # A bug, not bad input: tell the client without details and end the session.
        self.log.error("stage_crashed", stage=stage, exc_info=exc)
        if not self.outbox.closed:
            self.emit(ev.SessionCrashed())
            self.outbox.close()

    async def close(self) -> None:
        if self.response is not None:
            self.response.cancelled = True
        self.turn_checks.close()
        self.overlaps.close()
        self.first_speech.cancel()
        tasks = [t for t in (*self._tasks, self._gen_task, self.stt.interim) if t is not None]
        for task in tasks:
            task.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.cfg.server.session_close_timeout_s):
                await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._gen_task = None

    def reconfigure(self, settings: SessionSettings) -> None:
        """Apply a ``start`` message (before any audio: the VAD stage has no state yet).

        New VAD overrides take effect at the next silence (never mid-utterance)."""
        if settings.vad != self.settings.vad:
            self._vad_changed = True
        self.settings = settings

    def _make_endpointer(self, first_turn_id: int) -> Endpointer:
        cfg = self.cfg
        o = self.settings.vad or VadOverrides()
        self.turn_checks.english = (self.settings.language or cfg.stt.language).startswith("en")
        turn = turn_settings(cfg, self.runtime, self.settings.turn, o.stop_ms)
        self.turn_checks.semantic = turn.semantic
        return Endpointer(
            EndpointerSettings(
                frame_ms=cfg.vad.frame_ms, start_ms=cfg.vad.start_ms,
                stop_ms=o.stop_ms if o.stop_ms is not None else cfg.vad.stop_ms,
                barge_in_min_ms=cfg.vad.barge_in_min_ms,
                preroll_ms=o.preroll_ms if o.preroll_ms is not None else cfg.vad.preroll_ms,
                interim_interval_ms=cfg.stt.interim_interval_ms,
                early_final_ms=cfg.stt.early_final_ms,
                pause_words_ms=cfg.stt.pause_words_ms,
                max_utterance_ms=int(cfg.stt.max_utterance_s * 1000),
                turn=turn,
                barge_in_words=self.interruptions.by_words,
                overlap_check_ms=self.interruptions.check_interval_ms,
            ),
            first_turn_id=first_turn_id,
        )

    @property
    def interruptions(self) -> interruptions.InterruptionSettings:
        return self.settings.interruptions or interruptions.from_config(self.cfg.interruptions)

    @property
    def _vad_threshold(self) -> float | None:
        return self.settings.vad.threshold if self.settings.vad else None

    def emit(self, event: ev.Event) -> None:
        self.outbox.put(event)

    @property
    def replying(self) -> bool:
        return self.response is not None

    # --- client input (called by the transport, never blocks) -----------------------

    def feed_audio(self, pcm_in: bytes) -> None:
        """Client audio at the session's input rate, through the VAD stage now."""
        if self.outbox.closed:
            return
        try:
            self._vad_push(pcm_in)
        except Exception as exc:
            self._crashed("vad", exc)

    def end_of_speech(self) -> None:
        try:
            self._turn_events(self.endpointer.force_stop())
        except Exception as exc:  # a bug, guarded like feed_audio's
            self._crashed("vad", exc)

    def user_text(self, text: str) -> None:
        turn_id = self.endpointer.new_turn_id()
        self.interrupt(new_turn=turn_id)
        self.current_turn = turn_id
        self._submit_turn(UserTurn(turn_id, text))

    def interrupt(self, new_turn: int | None = None) -> None:
        """Barge-in or client ``interrupt``: stop the live reply now, keep what was heard."""
        r = self.response
        if new_turn is not None:
            self.current_turn = max(self.current_turn, new_turn)
        if r is None:
            return
        self._stop_reply(r, interrupted=True)

    def _stop_reply(self, r: Response, *, interrupted: bool) -> None:
        """End a live reply now (barge-in, or its task failed): queued audio purged,
        ``stream_end`` sent, the history keeps what the listener heard."""
        r.cancelled = True
        self.pauses.release(r)
        self.response = None
        if self._gen_task is not None:
            self._gen_task.cancel()
        for q in (self.tts_q, self.play_q):
            while not q.empty():
                q.get_nowait()
        purged = self.outbox.purge_audio(r.response_id)
        now = _ms()
        delivered = r.pacer.sent_ms - purged
        played = min(r.pacer.played_ms(now), delivered)
        if interrupted:
            self.emit(ev.Interrupted(r.response_id))
        if r.tts_started:
            self.emit(ev.TtsComplete(r.response_id, round(delivered), True, round(played)))
        self.emit(ev.StreamEnd(r.response_id))
        heard = heard_text(r.segments, played)
        self._remember(r, heard)
        self._record_turn(r, heard, interrupted=True)
        self.log.info("interrupted", response_id=r.response_id, played_ms=round(played),
                      heard_chars=len(heard), reply_chars=len(r.text))

    # --- VAD stage --------------------------------------------------------------------

    def _vad_push(self, chunk: bytes) -> None:
        vin = self._input
        if vin is None:
            vin = self._input = VadInput(self.runtime.vad, self.cfg.vad.frame_ms,
                                         self.settings.input.sample_rate, self._vad_threshold)
        if self._vad_changed and not self.endpointer.speaking:
            self._vad_changed = False
            vin.stream = vin.new_stream(self._vad_threshold)
            self.endpointer = self._make_endpointer(self.endpointer.new_turn_id())
            self._turn_ended_ms = float("-inf")  # the new endpointer's clock starts at 0
        for frame in vin.frames(chunk):
            speech = vin.stream.is_speech(frame) and (self.settings.barge_in or not self.replying)
            events = self.endpointer.push(frame, speech, self.replying)
            if events:
                self._turn_events(events)

    def _turn_events(self, events: list[TurnEvent]) -> None:
        for event in events:
            te = self._at_pipeline_rate(event)
            if isinstance(te, SpeechStarted):
                if not te.during_reply:
                    self.current_turn = te.turn_id
                    self.emit(ev.SpeechStarted(te.turn_id))
            elif isinstance(te, BargeIn):
                self.emit(ev.SpeechStarted(te.turn_id))
                self.interrupt(new_turn=te.turn_id)
            elif isinstance(te, InterimAudio):
                self.stt.put_interim(SttJob(te.turn_id, te.pcm, final=False))
            elif isinstance(te, PauseAudio):
                self.stt.put(SttJob(te.turn_id, te.pcm, final=False, early=True, pause=te.pause,
                                    words_only=te.words_only))
            elif isinstance(te, OverlapAudio):
                s = self._overlap_settings(te)
                if s.on_overlap == "pause" and self.response is not None and not te.final:
                    self.pauses.pause(self.response, te.turn_id, s.resume_ms)
                self.overlaps.submit(te, s)
            elif isinstance(te, TurnCheck):
                self.turn_checks.submit(te, self.endpointer.settings.turn)
            elif isinstance(te, SpeechStopped):
                if te.discarded:
                    self.log.debug("speech_discarded", turn_id=te.turn_id)
                    continue
                self.emit(ev.SpeechStopped(te.turn_id))
                self._turn_ended_ms = te.at_ms
                self.log.debug("turn_end", turn_id=te.turn_id, silence_ms=te.silence_ms)
                self.stt.put(SttJob(te.turn_id, te.pcm, final=True, stopped_at=_ms(),
                                  use_early=te.pause_is_final))

    def _at_pipeline_rate(self, te: TurnEvent) -> TurnEvent:
        """The event's audio (cut from VAD frames) at the rate the models take."""
        vin = self._input
        if vin is None or vin.rate == PIPELINE_RATE or isinstance(te, SpeechStarted | BargeIn):
            return te
        if isinstance(te, SpeechStopped) and te.discarded:
            return te  # dropped unheard: not worth converting
        return dataclasses.replace(te, pcm=vin.to_pipeline(te.pcm))

    def _verdict(self, check: TurnCheck, complete: bool | None) -> None:
        if self.outbox.closed:
            return
        try:
            self._turn_events(self.endpointer.verdict(check, complete))
        except Exception as exc:  # a bug, guarded like feed_audio's
            self._crashed("vad", exc)

    def _overlap_settings(self, ev: OverlapAudio) -> InterruptionSettings:
        """A continuation of the user's own sentence is not doubted (low confidence, few
        words yet)."""
        s = self.interruptions
        if ev.started_ms - self._turn_ended_ms <= s.continuation_ms:
            return dataclasses.replace(s, min_confidence=0.0, short_min_confidence=0.0,
                                       partial_min_ms=0)
        return s

    async def _decode_overlap(self, pcm16k: bytes) -> str:
        # Quick: the reply plays on while this decides whether it was an interruption.
        return await self.runtime.transcribe(pcm16k, self.settings.language,
                                             assistant_id=self.settings.assistant_id,
                                             quick=True)

    def _overlap(self, job: OverlapAudio, text: str, kind: Overlap) -> None:
        """Speech over the reply was decoded: real words interrupt and become the next
        turn; a backchannel or a sound without words leaves the reply playing."""
        yielded = job.turn_id == self._yielded_to  # an earlier check already interrupted
        if self.outbox.closed or (kind is not Overlap.WORDS and not yielded):
            if job.final and not self.outbox.closed:
                self.emit(ev.SpeechIgnored(job.turn_id, kind.value, text))
                if self.response is not None and self.pauses.turn_id == job.turn_id:
                    self.pauses.resume(self.response)
            return
        if not yielded:
            # Decided now, said a while ago: speech_started tells how long ago it began.
            late = round(max(0.0, self.endpointer.now_ms - job.started_ms))
            self.emit(ev.SpeechStarted(job.turn_id, late))
            self.interrupt(new_turn=job.turn_id)
            self._yielded_to = job.turn_id
        if job.final:  # the utterance is over: its transcript is this decode's
            self.emit(ev.SpeechStopped(job.turn_id))
            self._user_said(job.turn_id, text, _ms())
        else:  # it goes on as a turn like any other (if over, its final check follows)
            self.endpointer.confirm(job.turn_id)

    # --- STT stage (transcriber.py) ---------------------------------------------------

    async def _decode(self, pcm16k: bytes, turn_id: int,
                      on_partial: Callable[[str], None] | None, quick: bool,
                      last_word: bool, ahead: bool) -> str:
        """A transcription; a streaming STT's partial text goes to ``on_partial``."""
        partial = None if on_partial is None else (lambda text: on_partial(clean(text)))
        text: str = await self.runtime.transcribe(
            pcm16k, self.settings.language, on_partial=partial,
            assistant_id=self.settings.assistant_id, quick=quick, last_word=last_word,
            ahead=ahead)
        return clean(text)  # an upstream STT's text, like an LLM's

    def _speculate(self, turn_id: int, pause: int, text: str) -> None:
        """The words at a pause: make the reply's first speech now, in case the turn
        ends there (speculation.py; the real reply takes it only if it says the same)."""
        if not text or self.replying or self.outbox.closed or not self.settings.speak \
                or not self.settings.auto_respond or turn_id != self.endpointer.turn_id:
            return
        sid = self.settings.assistant_id
        reply = Reply(self.runtime, request_for(ReplyRequest(
            sid, self._system_prompt(), tuple(self.history), text,
            conversation_id=self.conversation_id, session_id=self.session_id)))
        self.first_speech.start(
            (turn_id, pause), reply, self.settings.voice, self.settings.output.sample_rate,
            lambda t: self._synthesize(t, self.settings.output.sample_rate, ahead=True),
            lambda: self.runtime.speculative(sid))

    async def _synthesize(self, text: str, out_rate: int, *, ahead: bool = False) -> Speech:
        return await self.runtime.synthesize(text, self.settings.voice, out_rate,
                                             assistant_id=self.settings.assistant_id,
                                             ahead=ahead)

    def _user_said(self, turn_id: int, text: str, stopped_at: float) -> None:
        """A turn's final transcript: to the client, and on to a reply."""
        self.stt.finalized(turn_id)  # an interim still running would come after this
        self.emit(ev.Transcription(turn_id, text, final=True))
        if text and not self.settings.auto_respond:
            self.history.append(Message("user", text))  # the client asks for the reply
        elif text:
            self._submit_turn(UserTurn(turn_id, text, stopped_at, _ms()))

    def _submit_turn(self, turn: UserTurn) -> None:
        while self.llm_q.full():  # a newer turn supersedes a queued older one
            self.llm_q.get_nowait()
        self.llm_q.put_nowait(turn)

    # --- LLM stage --------------------------------------------------------------------

    async def _llm_stage(self) -> None:
        while True:
            turn = await self.llm_q.get()
            if turn.turn_id < self.current_turn:
                if turn.text:
                    self.history.append(Message("user", turn.text))
                continue
            task = self._gen_task = asyncio.create_task(self._respond(turn))
            # wait() does not raise when a barge-in cancels the reply, but our own
            # cancellation (session close) still propagates.
            await asyncio.wait({task})
            self._gen_task = None
            if not task.cancelled() and (exc := task.exception()) is not None:
                self._reply_crashed(exc)

    def _reply_crashed(self, exc: BaseException) -> None:
        """A bug inside one reply: the client gets INTERNAL_ERROR and that reply's
        ``stream_end``; the session goes on (the next turn gets a new reply)."""
        self.log.error("reply_crashed", exc_info=exc)
        self.emit(ev.ReplyCrashed(self.response.response_id if self.response else None))
        if self.response is not None:
            self._stop_reply(self.response, interrupted=False)

    async def _respond(self, turn: UserTurn) -> None:
        cfg = self.cfg
        response_id = "resp_" + uuid.uuid4().hex[:16]
        r = Response(response_id, turn, Pacer(cfg.audio.pacing_lead_ms))
        self.response = r
        self.emit(ev.StreamStart(turn.turn_id, response_id))
        reply = Reply(self.runtime, ReplyRequest(
            self.settings.assistant_id, self._system_prompt(), tuple(self.history), turn.text,
            conversation_id=self.conversation_id, session_id=self.session_id,
            telephony=self.settings.telephony, speech=True,
            client_tools=self.settings.client_tools, tool_choice=self.settings.tool_choice))
        r.sources, r.tools = reply.sources, reply.tools  # filled in as the reply runs
        if turn.text:  # "": the reply continues after the client's tool results
            self.history.append(Message("user", turn.text))
        async with contextlib.aclosing(reply.items()) as items:
            async for item in items:
                if r.cancelled:
                    return
                await self._reply_item(r, item)
        r.sources, r.tools = reply.sources, reply.tools
        if r.text:
            self.emit(ev.AgentResponse(turn.turn_id, response_id, r.text.strip(),
                                       tuple(ev.Source(**src) for src in r.sources)))
        await self.tts_q.put(EndOfReply(turn.turn_id, response_id))

    async def _reply_item(self, r: Response, item: ReplyItem) -> None:
        if isinstance(item, SpokenSentence):
            await self.tts_q.put(Sentence(r.turn.turn_id, r.response_id, item.text))
        elif isinstance(item, Token | Filler):  # a filler (slow tool) is said like the text
            if r.first_token_at is None:
                r.first_token_at = _ms()
            text = item.text if isinstance(item, Token) else item.text + " "
            r.text += text
            self.emit(ev.Token(r.turn.turn_id, r.response_id, text))
        elif isinstance(item, ToolEvent):
            self.emit(tool_event(r, item))
            if item.signal is not None:
                r.signals.append(dataclasses.replace(item.signal, response_id=r.response_id))
        elif isinstance(item, ClientCalls):
            r.calls, r.call_results = item.calls, item.results
            for call in item.client:
                self.emit(ev.FunctionCall(r.turn.turn_id, r.response_id, call.id, call.name,
                                          call.raw_arguments or "{}"))
        else:
            self._provider_error("llm", item.error)

    def _system_prompt(self) -> str:
        llm = self.cfg.llm
        return system_prompt(llm.system_prompt, llm.assistant_name,
                             requested=self.settings.system_prompt, assistant=self.settings.prompt)

    def _provider_error(self, stage: str, exc: ProviderError) -> None:
        # The provider's text (an upstream's traceback, its URL) is for the log only.
        self.log.warning("provider_error", stage=stage, error=str(exc))
        self.emit(ev.ProviderFailed(stage, exc.retryable))

    def _live(self, turn_id: int, response_id: str) -> Response | None:
        r = self.response
        if r is None or r.cancelled or r.response_id != response_id:
            return None
        return r if turn_id >= self.current_turn else None

    # --- TTS stage --------------------------------------------------------------------

    async def _tts_stage(self) -> None:
        while True:
            item = await self.tts_q.get()
            if self._live(item.turn_id, item.response_id) is None:
                continue
            if isinstance(item, EndOfReply):
                await self.play_q.put(item)
                continue
            if not self.settings.speak:
                continue
            out_rate = self.settings.output.sample_rate  # per sentence: a client may change it
            try:
                speech = (await self.first_speech.prepared(item.text, self.settings.voice,
                                                           out_rate)
                          or await self._synthesize(item.text, out_rate))
            except ProviderError as exc:
                self._provider_error("tts", exc)
                continue
            if self._live(item.turn_id, item.response_id) is not None:
                await self.play_q.put(Segment(item.turn_id, item.response_id, item.text,
                                               speech.pcm, speech.phonemes))

    # --- playout ----------------------------------------------------------------------

    async def _playout_stage(self) -> None:
        while True:
            item = await self.play_q.get()
            r = self._live(item.turn_id, item.response_id)
            if r is None:
                continue
            if isinstance(item, Segment):
                await self._play_segment(r, item)
            else:
                await self._finish(r)

    async def _play_segment(self, r: Response, seg: Segment) -> None:
        out = self.settings.output
        if not r.tts_started:
            r.tts_started = True
            self.emit(ev.TtsStart(r.response_id, out.encoding, out.sample_rate))
        chunk = pcm.frame_bytes(out.sample_rate, self.cfg.audio.output_chunk_ms)
        if seg.phonemes:
            self._emit_lipsync(r, seg)
        r.segments.append(SpokenSegment(seg.text, pcm.duration_ms(len(seg.pcm), out.sample_rate)))
        # Woken once per few chunks, not per chunk (each wake-up costs a timer, a task
        # step and a write): the lead over playback stays within [lead - slack, lead].
        slack = min(2 * self.cfg.audio.output_chunk_ms, self.cfg.audio.pacing_lead_ms / 4)
        for start in range(0, len(seg.pcm), chunk):
            if not r.playing.is_set():  # paused while speech over it is decided
                await r.playing.wait()
            delay = r.pacer.delay_ms(_ms())
            if delay > 0:
                await asyncio.sleep((delay + slack) / 1000.0)
            if r.cancelled:
                return
            data = seg.pcm[start : start + chunk]
            dur = pcm.duration_ms(len(data), out.sample_rate)
            if r.first_audio_at is None:
                r.first_audio_at = _ms()
                self._log_latency(r)
            self.outbox.put(AudioOut(r.response_id, data, dur))
            r.pacer.sent(dur, _ms())
        self.emit(ev.SegmentPlayed(r.response_id, len(r.segments) - 1))

    def _emit_lipsync(self, r: Response, seg: Segment) -> None:
        """Mouth shapes and word timings for an avatar, relative to the reply's audio start."""
        offset = r.pacer.sent_ms
        cues = visemes.visemes(seg.phonemes, offset)
        words = visemes.word_timings(seg.text, seg.phonemes, offset)
        self.emit(ev.Visemes(r.response_id, tuple(cues)))
        if words:
            self.emit(ev.WordTimings(r.response_id, tuple(words)))

    async def _finish(self, r: Response) -> None:
        # Stay interruptible until the listener has heard the last chunk.
        while not r.cancelled and (r.pacer.buffered_ms(_ms()) > 0 or not r.playing.is_set()):
            if not r.playing.is_set():  # paused: not over until it has resumed and played
                await r.playing.wait()
                continue
            await asyncio.sleep(min(r.pacer.buffered_ms(_ms()), 50) / 1000.0)
        if r.cancelled or self.response is not r:
            return
        if r.tts_started:
            sent = round(r.pacer.sent_ms)
            self.emit(ev.TtsComplete(r.response_id, sent, False, sent))
        self.emit(ev.StreamEnd(r.response_id))
        for signal in r.signals:  # end_call / transfer: after the reply has been heard
            self.emit(signal)
        self._remember(r, r.text.strip())
        self.response = None
        self.turns_completed += 1
        self._record_turn(r, r.text.strip(), interrupted=False)

    def _remember(self, r: Response, said: str) -> None:
        """The reply in the history: what was said, and the client's calls it asked for
        (with the gateway's own results of that round), which the client answers."""
        if r.calls:
            for msg in (Message("assistant", said, tool_calls=r.calls), *r.call_results):
                self.history.append(msg)
        elif said:
            self.history.append(Message("assistant", said))

    def _record_turn(self, r: Response, heard: str, *, interrupted: bool) -> None:
        """Tell the observers (metrics, traces) and hand the finished turn to the
        transport's recorder (conversation storage)."""
        now = _ms()
        times = turn_times(r, now, interrupted)
        for observer in self.runtime.observers:
            try:
                observer.turn(times)
            except Exception:  # metrics must never cost a turn
                self.log.exception("turn_observer_failed")
        if self.on_turn_end is not None:
            self.on_turn_end(turn_record(r, heard, times, r.pacer.played_ms(now)))

    def _log_latency(self, r: Response) -> None:
        latency = turn_times(r, _ms(), False).latency_ms()
        self.log.info("turn_latency", turn_id=r.turn.turn_id, response_id=r.response_id,
                      **latency)
        self.emit(ev.Metrics(r.turn.turn_id, r.response_id, latency))


def _ms() -> float:
    return time.monotonic() * 1000.0
