// capstan-lkpublish: the data plane of a StreamPush pass-through into a LiveKit room.
//
// The Python pusher (capstan/pusher) stays the controller: it checks the source against the URL
// policy, probes it, decides pass-through, and runs FFmpeg, which reads the source at real speed
// (-re) and writes two pipes this program reads: H.264 Annex B access units (copied, not
// re-encoded) and Ogg Opus. This program joins the room with the worker's token (environment
// LIVEKIT_TOKEN, never the command line) and publishes each access unit and each Opus packet as it
// arrives, stamped with its arrival time, so sound and pictures keep the timing FFmpeg gave them.
//
// Keyframe requests (PLI/FIR) of subscribers are counted, not answered by an encoder: the source's
// next keyframe answers them (a viewer joining mid-GOP waits at most one GOP).
//
// The pipes may be written by several FFmpeg runs in turn (a file's loops, a live stream's
// reconnections): the controller keeps the write ends open between runs, so a new run's stream
// headers (SPS/PPS, OpusHead/OpusTags) simply follow. The push ends when both pipes reach their
// end (the controller closed them) or on SIGTERM/SIGINT; the program then leaves the room.
//
// Standard output: one JSON object a line for the controller ("joined", "keyframe_requests",
// "ended" with counts); errors go to standard error, and the exit code is 0 (ended or stopped),
// 2 (could not join or publish) or 3 (removed from the room / the room closed).
package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/livekit/protocol/livekit"
	"github.com/livekit/protocol/logger"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
)

var out = struct {
	sync.Mutex
	enc *json.Encoder
}{enc: json.NewEncoder(os.Stdout)}

func say(v map[string]any) {
	out.Lock()
	defer out.Unlock()
	_ = out.enc.Encode(v)
}

func main() {
	url := flag.String("url", "", "LiveKit URL (ws:// or wss://)")
	videoFd := flag.Int("video-fd", -1, "file descriptor of the H.264 Annex B pipe (-1: no video)")
	audioFd := flag.Int("audio-fd", -1, "file descriptor of the Ogg Opus pipe (-1: no audio)")
	fps := flag.Float64("fps", 30, "the source's frame rate (the shortest distance between two pictures' RTP times)")
	width := flag.Int("width", 0, "picture width")
	height := flag.Int("height", 0, "picture height")
	stereo := flag.Bool("stereo", false, "the sound is stereo")
	videoName := flag.String("video-name", "main-video", "name of the video track")
	audioName := flag.String("audio-name", "main-audio", "name of the audio track")
	pace := flag.Bool("pace", false, "pace the samples by their media times (FFmpeg reads a file without -re)")
	flag.Parse()
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1) // one thread runs it all: measured 0.027-0.035 core against 0.044 with 2
	}
	token := os.Getenv("LIVEKIT_TOKEN")
	if *url == "" || token == "" || (*videoFd < 0 && *audioFd < 0) {
		fmt.Fprintln(os.Stderr, "capstan-lkpublish: -url, LIVEKIT_TOKEN and at least one of -video-fd, -audio-fd are needed")
		os.Exit(2)
	}
	lksdk.SetLogger(logger.GetLogger())                                // warnings and errors of the SDK to standard error
	if path := os.Getenv("CAPSTAN_LKPUBLISH_CPUPROFILE"); path != "" { // bench/push_profile.py
		if f, err := os.Create(path); err == nil && pprof.StartCPUProfile(f) == nil {
			code := run(*url, token, *videoFd, *audioFd, *fps, *width, *height, *stereo, *videoName, *audioName, *pace)
			pprof.StopCPUProfile()
			f.Close()
			os.Exit(code)
		}
	}
	os.Exit(run(*url, token, *videoFd, *audioFd, *fps, *width, *height, *stereo, *videoName, *audioName, *pace))
}

func run(url, token string, videoFd, audioFd int, fps float64, width, height int, stereo bool,
	videoName, audioName string, pace bool) int {
	gone := make(chan string, 1)
	cb := lksdk.NewRoomCallback()
	cb.OnDisconnectedWithReason = func(reason lksdk.DisconnectionReason) {
		select {
		case gone <- fmt.Sprint(reason):
		default:
		}
	}
	room, err := lksdk.ConnectToRoomWithToken(url, token, cb, lksdk.WithAutoSubscribe(false))
	if err != nil {
		fmt.Fprintf(os.Stderr, "capstan-lkpublish: joining the room failed: %v\n", err)
		return 2
	}
	defer room.Disconnect()

	var keyframeRequests atomic.Int64
	var wg sync.WaitGroup
	tracks := 0
	for _, fd := range []int{videoFd, audioFd} {
		if fd >= 0 {
			tracks++
		}
	}
	line := newTimeline(tracks)
	counts := map[string]*atomic.Int64{"video_frames": {}, "audio_packets": {}}
	if videoFd >= 0 {
		track, err := lksdk.NewLocalTrack(webrtc.RTPCodecCapability{
			MimeType: webrtc.MimeTypeH264, ClockRate: 90000,
			SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
		}, lksdk.WithRTCPHandler(func(p rtcp.Packet) {
			switch p.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				keyframeRequests.Add(1)
			}
		}))
		if err == nil {
			_, err = room.LocalParticipant.PublishTrack(track, &lksdk.TrackPublicationOptions{
				Name: videoName, Source: livekit.TrackSource_CAMERA, VideoWidth: width, VideoHeight: height})
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "capstan-lkpublish: publishing the video failed: %v\n", err)
			return 2
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			frame := time.Duration(float64(time.Second) / max(fps, 1))
			clock := sampleClock(pace, line)
			defer clock.done()
			err := readAnnexB(os.NewFile(uintptr(videoFd), "video"), func(unit []byte) {
				_ = track.WriteSample(media.Sample{Data: unit, Duration: clock.next(frame)}, nil)
				counts["video_frames"].Add(1)
			}, clock.boundary)
			if err != nil {
				fmt.Fprintf(os.Stderr, "capstan-lkpublish: reading the video: %v\n", err)
			}
		}()
	}
	if audioFd >= 0 {
		track, err := lksdk.NewLocalTrack(webrtc.RTPCodecCapability{
			MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1",
		})
		if err == nil {
			_, err = room.LocalParticipant.PublishTrack(track, &lksdk.TrackPublicationOptions{
				Name: audioName, Source: livekit.TrackSource_MICROPHONE, Stereo: stereo, DisableDTX: true})
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "capstan-lkpublish: publishing the audio failed: %v\n", err)
			return 2
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			clock := sampleClock(pace, line)
			defer clock.done()
			err := readOggOpus(os.NewFile(uintptr(audioFd), "audio"), func(packet []byte) {
				_ = track.WriteSample(media.Sample{Data: packet, Duration: clock.next(opusDuration(packet))}, nil)
				counts["audio_packets"].Add(1)
			}, clock.boundary)
			if err != nil {
				fmt.Fprintf(os.Stderr, "capstan-lkpublish: reading the audio: %v\n", err)
			}
		}()
	}
	say(map[string]any{"event": "joined"})

	ended := make(chan struct{})
	go func() { wg.Wait(); close(ended) }()
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	reported := int64(0)
	code, why := 0, "the sources ended"
loop:
	for {
		select {
		case <-tick.C:
			if pace {
				run, at := line.position()
				say(map[string]any{"event": "position", "run": run, "seconds": at.Seconds()})
			}
			if n := keyframeRequests.Load(); n != reported {
				reported = n
				say(map[string]any{"event": "keyframe_requests", "count": n})
			}
		case <-ended:
			time.Sleep(100 * time.Millisecond) // the last packets leave before the participant does
			break loop
		case s := <-signals:
			why = "stopped (" + s.String() + ")"
			break loop
		case reason := <-gone:
			code, why = 3, "left the room: "+reason
			break loop
		}
	}
	run, at := line.position()
	say(map[string]any{"event": "ended", "reason": why, "keyframe_requests": keyframeRequests.Load(),
		"video_frames": counts["video_frames"].Load(), "audio_packets": counts["audio_packets"].Load(),
		"run": run, "seconds": at.Seconds()})
	return code
}

// clock gives each sample its RTP distance from the one before, waiting first where it paces.
type clock interface {
	next(length time.Duration) time.Duration
	boundary() // the source's next run begins (a file's next loop)
	done()     // the track's pipe ended
}

func sampleClock(pace bool, line *timeline) clock {
	if pace {
		return &pacedClock{line: line}
	}
	return &arrivalClock{line: line}
}

// arrivalClock: FFmpeg -re paces (a live stream): samples leave as they arrive.
type arrivalClock struct {
	mediaClock
	line *timeline
}

func (c *arrivalClock) next(length time.Duration) time.Duration {
	return c.mediaClock.next(time.Now(), length)
}
func (c *arrivalClock) boundary() {}
func (c *arrivalClock) done()     {}

// timeline: the media clock the paced tracks share. Media time 0 is at wall time `origin` (the
// first sample); a track whose sample is read more than `gap` after its due time (a stalled
// source) moves the origin on for both, so they stay together and the RTP times show the gap.
// A file's runs follow each other on it: the next run starts where the longer track of the last
// one ended, once every track has reached the boundary (each waits for the other there).
type timeline struct {
	mu     sync.Mutex
	cond   *sync.Cond
	origin time.Time
	shift  time.Duration           // stalls so far
	tracks int                     // tracks whose pipe has not ended
	ends   map[int][]time.Duration // boundary -> where the tracks that reached it ended
	starts map[int]time.Duration   // boundary -> where the next run starts
	clocks []*pacedClock
}

func newTimeline(tracks int) *timeline {
	t := &timeline{tracks: tracks, ends: map[int][]time.Duration{}, starts: map[int]time.Duration{}}
	t.cond = sync.NewCond(&t.mu)
	return t
}

// settle: with t.mu held, fix the starts of the boundaries every remaining track has reached.
func (t *timeline) settle() {
	for k, ends := range t.ends {
		if _, fixed := t.starts[k]; !fixed && len(ends) >= t.tracks {
			start := time.Duration(0)
			for _, e := range ends {
				start = max(start, e)
			}
			t.starts[k] = start
			t.cond.Broadcast()
		}
	}
}

// position: the run and the media seconds into it that every track has published (the least).
func (t *timeline) position() (int, time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	run, at, any := 0, time.Duration(0), false
	for _, c := range t.clocks {
		if c.ended {
			continue
		}
		r, a := c.run, c.sent-c.runStart
		if !any || r < run || (r == run && a < at) {
			run, at, any = r, a, true
		}
	}
	if !any {
		for _, c := range t.clocks { // all ended: the furthest
			if r, a := c.run, c.sent-c.runStart; r > run || (r == run && a > at) {
				run, at = r, a
			}
		}
	}
	return run, at
}

// pacedClock: one track on the timeline; each sample waits until its media time is due.
type pacedClock struct {
	line                *timeline
	pos, last           time.Duration // media time of the next sample, of the last one
	sent                time.Duration // media time up to which samples have gone out
	runStart            time.Duration
	run                 int
	seenShift           time.Duration
	started, registered bool
	ended               bool
}

func (c *pacedClock) next(length time.Duration) time.Duration {
	t := c.line
	t.mu.Lock()
	if !c.registered {
		c.registered = true
		t.clocks = append(t.clocks, c)
	}
	if t.origin.IsZero() {
		t.origin = time.Now()
	}
	due := t.origin.Add(c.pos)
	if late := time.Since(due); late > gap {
		t.origin = t.origin.Add(late)
		t.shift += late
		due = due.Add(late)
	}
	stalled := t.shift - c.seenShift
	c.seenShift = t.shift
	t.mu.Unlock()
	if wait := time.Until(due); wait > 0 {
		time.Sleep(wait)
	}
	distance := length
	if c.started {
		distance = c.pos - c.last + stalled
	}
	c.started = true
	c.last = c.pos
	c.pos += length
	t.mu.Lock()
	c.sent = c.pos
	t.mu.Unlock()
	return distance
}

func (c *pacedClock) boundary() {
	t := c.line
	t.mu.Lock()
	defer t.mu.Unlock()
	if !c.registered {
		c.registered = true
		t.clocks = append(t.clocks, c)
	}
	k := c.run
	t.ends[k] = append(t.ends[k], c.pos)
	t.settle()
	for {
		if start, ok := t.starts[k]; ok {
			c.pos, c.runStart, c.sent, c.run = start, start, start, k+1
			return
		}
		t.cond.Wait()
	}
}

func (c *pacedClock) done() {
	t := c.line
	t.mu.Lock()
	defer t.mu.Unlock()
	c.ended = true
	t.tracks--
	t.settle()
}

// gapSeconds: a sample this much later than its media time says starts a new stretch (a file's
// next loop, a live stream's reconnection, a stall of the source): its RTP time jumps by the gap.
const gap = 250 * time.Millisecond

// mediaClock gives each sample of a track its RTP distance from the one before: the media length
// of the samples (a frame at the source's rate, an Opus packet's own length), not their arrival
// times, which jitter; only a gap longer than `gap` moves the media time on to the wall clock.
// FFmpeg -re writes the samples in real time, so media time and wall time stay together.
type mediaClock struct {
	start     time.Time
	pos, last time.Duration // media time of the next sample, of the last one
	started   bool
}

func (c *mediaClock) next(now time.Time, length time.Duration) time.Duration {
	if !c.started {
		c.started, c.start, c.pos = true, now, length
		return length
	}
	if late := now.Sub(c.start) - c.pos; late > gap {
		c.pos += late
	}
	distance := c.pos - c.last
	c.last = c.pos
	c.pos += length
	return distance
}

// readAnnexB calls unit with each H.264 access unit (Annex B, start codes kept) of r until its end.
// An access unit ends where the next begins: an AUD, SPS, PPS or SEI after a slice, or a slice
// whose first_mb_in_slice is 0 (its first bit after the NAL header is 1) after a slice. So a unit
// is handed on when the first NAL of the next one has arrived (FFmpeg writes one unit per write):
// one picture's time after it was read.
func readAnnexB(r io.Reader, unit func([]byte), boundary func()) error {
	var buf, au []byte
	sawSlice := false
	chunk := make([]byte, 256<<10)
	nal := func(n []byte) { // n: one NAL with its start code
		body := bytes.TrimLeft(n, "\x00")[1:]
		if len(body) == 0 {
			return
		}
		kind := body[0] & 0x1f
		slice := kind >= 1 && kind <= 5
		starts := (kind == 9 || kind == 7 || kind == 8 || kind == 6) || (slice && len(body) > 1 && body[1]&0x80 != 0)
		if sawSlice && starts && len(au) > 0 {
			unit(au)
			au, sawSlice = nil, false
		}
		if kind == 11 { // end of stream: the controller's mark between two runs of the source
			if len(au) > 0 {
				unit(au)
			}
			au, sawSlice = nil, false
			boundary()
			return
		}
		if kind == 9 { // delimiters are dropped: WebRTC does not want them
			return
		}
		au = append(au, n...)
		sawSlice = sawSlice || slice
	}
	for {
		n, err := r.Read(chunk)
		buf = append(buf, chunk[:n]...)
		// every NAL but the last one in buf is complete
		for {
			first := startCode(buf, 0)
			if first < 0 {
				break
			}
			next := startCode(buf, first+3)
			if next < 0 {
				buf = buf[first:]
				break
			}
			nal(bytes.Clone(buf[first:next]))
			buf = buf[next:]
		}
		if err != nil {
			if len(buf) > 0 {
				nal(buf)
			}
			if len(au) > 0 {
				unit(au)
			}
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// startCode: where the next 00 00 01 (or 00 00 00 01) start code at or after from begins, or -1.
func startCode(b []byte, from int) int {
	if from > len(b) {
		return -1
	}
	j := bytes.Index(b[from:], []byte{0, 0, 1})
	if j < 0 {
		return -1
	}
	at := from + j
	if at > from && b[at-1] == 0 {
		return at - 1
	}
	return at
}

// readOggOpus calls packet with each Opus packet of the Ogg stream(s) in r until its end; the
// OpusHead and OpusTags packets of every stream are skipped (a new FFmpeg run starts a new stream).
func readOggOpus(r io.Reader, packet func([]byte), boundary func()) error {
	br := bufio.NewReaderSize(r, 64<<10)
	header := make([]byte, 27)
	var pending []byte
	streams := 0
	for {
		if _, err := io.ReadFull(br, header); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil
			}
			return err
		}
		if !bytes.Equal(header[:4], []byte("OggS")) {
			return fmt.Errorf("not an Ogg page")
		}
		_ = binary.LittleEndian.Uint64(header[6:14]) // granule position: unused, times are arrival times
		segments := make([]byte, header[26])
		if _, err := io.ReadFull(br, segments); err != nil {
			return nil
		}
		total := 0
		for _, s := range segments {
			total += int(s)
		}
		body := make([]byte, total)
		if _, err := io.ReadFull(br, body); err != nil {
			return nil
		}
		if header[5]&0x02 != 0 { // beginning of a stream: a run after the first one starts
			pending = nil
			if streams++; streams > 1 {
				boundary()
			}
		}
		at := 0
		for _, s := range segments {
			pending = append(pending, body[at:at+int(s)]...)
			at += int(s)
			if s < 255 {
				p := pending
				pending = nil
				if len(p) == 0 || bytes.HasPrefix(p, []byte("OpusHead")) || bytes.HasPrefix(p, []byte("OpusTags")) {
					continue
				}
				packet(p)
			}
		}
	}
}

// opusDuration: the length of an Opus packet from its TOC byte (RFC 6716 §3.1).
func opusDuration(p []byte) time.Duration {
	if len(p) == 0 {
		return 20 * time.Millisecond
	}
	config := p[0] >> 3
	var frame time.Duration
	switch {
	case config < 12:
		frame = []time.Duration{10, 20, 40, 60}[config%4] * time.Millisecond
	case config < 16:
		frame = []time.Duration{10, 20}[config%2] * time.Millisecond
	default:
		frame = []time.Duration{2500, 5000, 10000, 20000}[config%4] * time.Microsecond
	}
	frames := 1
	switch p[0] & 3 {
	case 1, 2:
		frames = 2
	case 3:
		if len(p) > 1 {
			frames = int(p[1] & 0x3f)
		}
	}
	return frame * time.Duration(frames)
}
