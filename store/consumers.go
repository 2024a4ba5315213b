package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// Consumer events (contract §7). A feature that manages an API's consumers
// (keys, applications, subscriptions...) records, in the transaction that
// changes them, the events that second-generation gateways must hear
// (tx.recordConsumer). Each event names the gateways it goes to as the
// transaction saw them; the fleet delivers them after the commit, in
// commit order, on every replica (ChangeConsumer).

// ConsumerEvent is one event about consumers, for second-generation
// gateways.
type ConsumerEvent struct {
	Type string `json:"type"`
	// APIID, when set, makes it an event of that API: it goes to the
	// gateways the API is deployed to, after the API's api.deployed on
	// each connection. Otherwise it goes to every gateway of OrgID.
	APIID string `json:"api,omitempty"`
	OrgID string `json:"org"`
	// UserID is the envelope's userId (absent when empty).
	UserID  string          `json:"user,omitempty"`
	Payload json.RawMessage `json:"payload"`
	// Gateways are the targets: filled in by recordConsumer unless set.
	Gateways []string `json:"gateways"`
}

// NewConsumerEvent makes an event of an API (apiID set) or of the
// organization, with its payload encoded as JSON.
func NewConsumerEvent(typ, orgID, apiID, userID string, payload any) (*ConsumerEvent, error) {
	b, err := marshalJSON(payload)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", typ, err)
	}
	return &ConsumerEvent{Type: typ, OrgID: orgID, APIID: apiID, UserID: userID, Payload: b}, nil
}

// recordConsumer fills in each event's target gateways and records them as
// one ChangeConsumer, published once the transaction commits. On
// PostgreSQL the events are also written for the other replicas, sealed.
func (t *Tx) recordConsumer(ctx context.Context, now time.Time, evs ...*ConsumerEvent) error {
	if len(evs) == 0 {
		return nil
	}
	targets := map[string][]string{}
	for _, ev := range evs {
		if ev.Gateways != nil {
			continue // targets chosen by the feature
		}
		key := "api:" + ev.APIID
		if ev.APIID == "" {
			key = "org:" + ev.OrgID
		}
		gws, ok := targets[key]
		if !ok {
			var err error
			if gws, err = consumerTargets(ctx, t, ev); err != nil {
				return err
			}
			targets[key] = gws
		}
		ev.Gateways = gws
	}
	c := t.record(&Change{Kind: ChangeConsumer, Consumer: evs})
	if t.dialect != dialectPostgres {
		return nil
	}
	body, err := marshalJSON(evs)
	if err != nil {
		return err
	}
	_, err = t.ExecContext(ctx, `INSERT INTO consumer_events (change_id, body, created_at) VALUES ($1, $2, $3)`,
		c.ID, t.sealer.seal(string(body), consumerAAD(c.ID)), formatTime(now))
	return err
}

// consumerTargets are the gateways an event goes to: those the API is
// deployed to, or every gateway of the organization.
func consumerTargets(ctx context.Context, t *Tx, ev *ConsumerEvent) ([]string, error) {
	q, arg := `SELECT gateway_id FROM deployments WHERE api_id = $1 AND state = 'deployed' ORDER BY gateway_id`, ev.APIID
	if ev.APIID == "" {
		q, arg = `SELECT id FROM gateways WHERE organization_id = $1 ORDER BY id`, ev.OrgID
	}
	rows, err := t.QueryContext(ctx, q, arg)
	if err != nil {
		return nil, fmt.Errorf("targets of %s: %w", ev.Type, err)
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

func consumerAAD(changeID string) string { return "consumer-event:" + changeID }

// readConsumerEvents reads the events of another replica's change.
func (db *DB) readConsumerEvents(ctx context.Context, changeID string) ([]*ConsumerEvent, error) {
	var sealed string
	err := db.readTx(ctx, func(tx *Tx) error {
		return tx.QueryRowContext(ctx, `SELECT body FROM consumer_events WHERE change_id = $1`, changeID).Scan(&sealed)
	})
	if err != nil {
		return nil, fmt.Errorf("read consumer events of change %s: %w", changeID, err)
	}
	body, err := db.sealer.open(sealed, consumerAAD(changeID))
	if err != nil {
		return nil, fmt.Errorf("consumer events of change %s: %w", changeID, err)
	}
	var evs []*ConsumerEvent
	if err := json.Unmarshal([]byte(body), &evs); err != nil {
		return nil, fmt.Errorf("consumer events of change %s: %w", changeID, err)
	}
	return evs, nil
}

// consumerEventsKept is how long another replica may take to read a
// change's consumer events.
const consumerEventsKept = 5 * time.Minute

// pruneConsumerEvents forgets old consumer events, once a minute.
func (db *DB) pruneConsumerEvents(ctx context.Context) error {
	now := db.Now()
	db.fetchMu.Lock()
	due := now.After(db.consumersAt)
	if due {
		db.consumersAt = now.Add(time.Minute)
	}
	db.fetchMu.Unlock()
	if !due {
		return nil
	}
	return db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM consumer_events WHERE created_at < $1`,
			formatTime(now.Add(-consumerEventsKept)))
		return err
	})
}

// NoteConsumersPulled publishes that the gateway's GET /apis/api-keys was
// answered (ChangeConsumersPulled), so that the replicas holding its
// connections send what it cannot pull.
func (db *DB) NoteConsumersPulled(ctx context.Context, gatewayID string) error {
	return db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		tx.record(&Change{Kind: ChangeConsumersPulled, GatewayID: gatewayID})
		return nil
	})
}

// RecordConsumerEvents publishes events in a transaction of their own, for
// a feature whose events do not follow from a change of its rows (and for
// tests of the delivery).
func (db *DB) RecordConsumerEvents(ctx context.Context, evs ...*ConsumerEvent) error {
	return db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		for _, ev := range evs {
			ev.Gateways = nil
		}
		return tx.recordConsumer(ctx, now, evs...)
	})
}
