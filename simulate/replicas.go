package simulate

import (
	"context"
	"errors"
	"net"
)

// Several targets. -target may name several replicas of one server (one
// database): gateway i connects to target i % n, REST calls go to the
// targets in turn, deployment k through target k % n, and delivery latency
// is split by whether the gateway's connection is on the replica that
// handled the deploy request.

// several reports whether the run plays against several replicas.
func (r *runner) several() bool { return len(r.targets) > 1 }

// call makes a REST call through the next target in turn.
func (r *runner) call(ctx context.Context, method, path string, body, out any, want ...int) error {
	first := int(r.turn.Add(1)-1) % len(r.targets)
	_, err := r.callVia(ctx, first, method, path, body, out, want...)
	return err
}

// callVia makes a REST call through target first, or, when a target cannot
// be reached (its replica is down), through the next one that can. It
// returns the index of the target that answered.
func (r *runner) callVia(ctx context.Context, first int, method, path string, body, out any, want ...int) (int, error) {
	var err error
	for k := range r.targets {
		at := (first + k) % len(r.targets)
		if err = r.targets[at].call(ctx, method, path, body, out, want...); !unreachable(err) {
			return at, err
		}
	}
	return first, err
}

// unreachable reports whether err is a failure to connect: the request was
// never sent, so sending it to another replica cannot do it twice.
func unreachable(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}
