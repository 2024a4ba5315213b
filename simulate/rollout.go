package simulate

import (
	"context"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// RolloutReport is what a progressive rollout to the fleet did (-rollout).
type RolloutReport struct {
	ID     string `json:"id"`
	Status string `json:"status"` // COMPLETED, HALTED, ...
	// Reached counts the gateways the server sent the revision to (those
	// of the waves it began); Received those that got its api.deployed,
	// as the simulator saw.
	Reached  int `json:"reached"`
	Received int `json:"received"`
	// Waves is how many waves were deployed, of WavesTotal.
	Waves      int `json:"waves"`
	WavesTotal int `json:"wavesTotal"`
	// Failing is how many gateways were made to acknowledge failure,
	// Failed how many the rollout counted as failed.
	Failing int    `json:"failing"`
	Failed  int    `json:"failed"`
	Reason  string `json:"reason,omitempty"`
	// DurationMs: request sent -> the rollout ended (completed, halted).
	DurationMs float64 `json:"durationMs"`
	Pause      string  `json:"pause"`
}

// ParseWaves reads -rollout: cumulative percentages separated by commas.
func ParseWaves(s string) ([]int, error) {
	if s == "" {
		return nil, nil
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("-rollout: %q is not a percentage (use such as 1,10,50,100)", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// markFailing makes a fraction of the fleet acknowledge failure of every
// deploy of the measured API: spread evenly in fleet order (the rollout's
// target order), every 1/fail-th gateway starting with the first, so that
// the first wave holds one.
func (r *runner) markFailing() int {
	if r.opt.Fail <= 0 {
		return 0
	}
	step := max(1, int(math.Round(1/r.opt.Fail)))
	n := 0
	for i, g := range r.gws {
		if i%step == 0 {
			g.failDeploys = true
			n++
		}
	}
	return n
}

// runRollout makes a rollout of the measured API (a new revision) to the
// whole fleet, in the waves of -rollout, and follows it to its end.
func (r *runner) runRollout(ctx context.Context) *RolloutReport {
	rep := &RolloutReport{Failing: r.markFailing(), WavesTotal: len(r.opt.Rollout), Pause: r.opt.RolloutPause.String()}
	ids := make([]string, len(r.gws))
	for i, g := range r.gws {
		ids[i] = g.id
	}
	body := map[string]any{"gatewayIds": ids, "waves": r.opt.Rollout, "maxFailures": r.opt.MaxFailures,
		"pause": r.opt.RolloutPause.String(), "waveTimeout": r.opt.WaveTimeout.String()}
	var out rolloutAnswer
	start := time.Now()
	r.progress("rollout: %d gateways in waves %v", len(ids), r.opt.Rollout)
	path := "/api/v1/apis/" + r.apis[0] + "/rollouts?wait=" + url.QueryEscape(time.Minute.String())
	if err := r.call(ctx, "POST", path, body, &out, 201); err != nil {
		r.fail("rollout: %v", err)
		return rep
	}
	deadline := start.Add(r.opt.Wait + r.opt.RolloutPause*time.Duration(len(r.opt.Rollout)))
	for out.Status == "RUNNING" && time.Now().Before(deadline) && ctx.Err() == nil {
		r.progress("rollout: wave %d of %d, %d gateways reached", out.CurrentWave, len(out.Waves), out.Reached)
		time.Sleep(50 * time.Millisecond)
		if err := r.call(ctx, "GET", "/api/v1/rollouts/"+out.ID, nil, &out, 200); err != nil {
			r.fail("rollout: %v", err)
			return rep
		}
	}
	rep.DurationMs = ms(time.Since(start))
	rep.ID, rep.Status, rep.Reached, rep.Waves, rep.Failed, rep.Reason = out.ID, out.Status, out.Reached, out.CurrentWave, out.Failed, out.Reason
	if out.Status == "RUNNING" {
		r.fail("rollout %s still running after %s", out.ID, time.Since(start).Round(time.Millisecond))
	}
	for _, g := range r.gws {
		if got, _ := g.times(out.RevisionID); !got.at.IsZero() {
			rep.Received++
		}
	}
	return rep
}

// rolloutAnswer is what the simulator reads of a rollout.
type rolloutAnswer struct {
	ID          string `json:"id"`
	RevisionID  string `json:"revisionId"`
	Status      string `json:"status"`
	Reason      string `json:"reason"`
	CurrentWave int    `json:"currentWave"`
	Reached     int    `json:"reached"`
	Failed      int    `json:"failed"`
	Waves       []struct {
		Size int `json:"size"`
	} `json:"waves"`
}

func (rep *RolloutReport) write(w interface{ Write([]byte) (int, error) }) {
	fmt.Fprintf(w, "rollout           %s after %.1f ms (pause %s): wave %d of %d, %d gateways reached (%d received the event)\n",
		rep.Status, rep.DurationMs, rep.Pause, rep.Waves, rep.WavesTotal, rep.Reached, rep.Received)
	fmt.Fprintf(w, "                  %d gateways made to fail, %d counted failed", rep.Failing, rep.Failed)
	if rep.Reason != "" {
		fmt.Fprintf(w, ": %s", rep.Reason)
	}
	fmt.Fprintln(w)
}
