package fleet

import (
	"context"
	"sync"

	"platform-api/store"
)

// maxServed bounds what served remembers, in (gateway, API) pairs and in
// gateways: past it, it forgets everything and starts again (downloads of
// what it forgot read the store, as before the first deploy).
const maxServed = 200_000

// served remembers which revision each gateway runs of each API, as the
// deploy changes of this process name them, so that the downloads that
// follow an api.deployed (a whole fleet at once) are answered without a
// read of the store. The publisher updates it in commit order, before the
// events go out, so a gateway that heard of a revision finds it here.
//
// It is only on when this process is the store's one writer (SQLite: the
// data directory's lock). With replicas, a gateway may download through a
// replica whose listener has not yet heard of the change that another
// replica told the gateway about; that replica must read the database.
type served struct {
	on   bool
	mu   sync.Mutex
	revs map[servedKey]servedRev
	// gen2 says whether a gateway has reported a manifest (which
	// generation of document it downloads); read from the store once.
	gen2 map[string]bool
	// epoch grows with every change that could make a gen2 read stale, so
	// that a read that raced with one is not kept.
	epoch uint64
}

type servedKey struct{ gatewayID, apiID string }

type servedRev struct{ revisionID, deploymentID, vhost string }

func (s *served) init(on bool) {
	s.on = on
	s.revs = map[servedKey]servedRev{}
	s.gen2 = map[string]bool{}
}

// apply follows a committed change. The store calls the publisher in
// commit order, so what is here is never older than what was delivered.
func (s *served) apply(c *store.Change) {
	if !s.on {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch c.Kind {
	case store.ChangeDeployed:
		if len(s.revs)+len(c.Deployments) > maxServed {
			clear(s.revs)
		}
		for _, d := range c.Deployments {
			s.revs[servedKey{d.GatewayID, d.APIID}] = servedRev{d.RevisionID, d.DeploymentID, d.Vhost}
		}
	case store.ChangeUndeployed, store.ChangeAPIDeleted:
		for _, d := range c.Deployments {
			delete(s.revs, servedKey{d.GatewayID, d.APIID})
		}
	case store.ChangeManifest, store.ChangeGatewayDeleted:
		s.epoch++
		delete(s.gen2, c.GatewayID)
		if c.Kind == store.ChangeGatewayDeleted {
			for k := range s.revs {
				if k.gatewayID == c.GatewayID {
					delete(s.revs, k)
				}
			}
		}
	}
}

// DeployedRevision returns the deployment of an API to a gateway
// (store.ErrNotFound when it is not deployed there), and whether the
// gateway has reported a manifest: which generation of document it loads.
// A download that follows a deploy of this process is answered from memory.
func (f *Fleet) DeployedRevision(ctx context.Context, gatewayID, apiID string) (*store.Deployment, bool, error) {
	s := &f.served
	if !s.on {
		return f.store.DeployedRevision(ctx, gatewayID, apiID)
	}
	s.mu.Lock()
	r, found := s.revs[servedKey{gatewayID, apiID}]
	gen2, known := s.gen2[gatewayID]
	epoch := s.epoch
	s.mu.Unlock()
	if !found {
		d, gen2, err := f.store.DeployedRevision(ctx, gatewayID, apiID)
		if err == nil {
			s.learn(gatewayID, gen2, epoch)
		}
		return d, gen2, err
	}
	if !known {
		m, err := f.store.Manifest(ctx, gatewayID)
		if err != nil {
			return nil, false, err
		}
		gen2 = m != nil
		s.learn(gatewayID, gen2, epoch)
	}
	return &store.Deployment{APIID: apiID, GatewayID: gatewayID, DeploymentID: r.deploymentID,
		RevisionID: r.revisionID, Vhost: r.vhost, State: store.StateDeployed}, gen2, nil
}

// learn keeps a gateway's generation read from the store, unless a change
// that could make it stale came since the read began.
func (s *served) learn(gatewayID string, gen2 bool, epoch uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.epoch != epoch {
		return
	}
	if len(s.gen2) >= maxServed {
		clear(s.gen2)
	}
	s.gen2[gatewayID] = gen2
}
