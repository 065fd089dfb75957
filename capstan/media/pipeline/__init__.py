"""The media pipeline: parts every worker assembles, so nothing is written twice.

    sources (room track, recorded segments; later a file, RTMP, screen + sound)
      → processing (scale; later compose, mix)
      → encoders (one encoding spec: H.264, AAC, MP3)
      → sinks (HLS segmenter + TS mux + TRTC playlist → uploader; MP4; MP3; later a room publisher)

with one timeline (:mod:`capstan.media.timeline`) and one audio framer (:mod:`capstan.media.audio`).
The single-stream recorder is ``RoomTrackSource → Scale → VideoEncoder → HlsSink`` per video track
and ``RoomTrackSource → AudioConverter → AudioFramer → AudioEncoder → HlsSink`` per audio track
(:mod:`capstan.recorder.hls`); finalize is ``SegmentSource → Mp4Copy`` and ``SegmentSource →
EncodedAudio (MP3)``; the merge command is ``SegmentSource → Scale → x264`` and
``SegmentSource → EncodedAudio (AAC)``. Modelled on LiveKit egress's ``pkg/pipeline``.
"""
