package web

import (
	"fmt"
	"net/http"
	"time"
)

// heartbeat keeps proxies from closing an idle stream and lets a logged-out browser's stream
// end within this period.
const heartbeat = 25 * time.Second

// events streams "change" server-sent events after every registry change; pages with a live
// region then re-fetch it. The events carry no data: the fragment fetch is authorised and
// rendered like any page.
func (w *Web) events(wr http.ResponseWriter, r *http.Request, c *reqCtx) {
	rc := http.NewResponseController(wr)
	_ = rc.SetWriteDeadline(time.Time{}) // a server-wide WriteTimeout must not cut the stream
	ch, stop := w.opt.Store.Watch()
	defer stop()
	w.m.openStreams.Add(1)
	defer w.m.openStreams.Add(-1)
	h := wr.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	wr.WriteHeader(http.StatusOK)
	// retry: how long the browser waits before reconnecting after a daemon restart.
	fmt.Fprint(wr, "retry: 3000\n: connected\n\n")
	if err := rc.Flush(); err != nil {
		return
	}
	tick := time.NewTicker(heartbeat)
	defer tick.Stop()
	seq := 0
	for {
		select {
		case <-r.Context().Done():
			return
		case <-w.done:
			return
		case <-tick.C:
			if !w.sessions.alive(r) {
				return // logged out or expired: stop feeding this browser
			}
			fmt.Fprint(wr, ": ping\n\n")
		case <-ch:
			seq++
			fmt.Fprintf(wr, "event: change\ndata: %d\n\n", seq)
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}
