package store

// Subscription plans and subscriptions (contract §7): an application
// subscribed to an API under a plan, which second-generation gateways
// enforce. A subscription's token is sealed at rest like the secrets of API
// definitions (seal.go): gateways receive it in plain, the public API shows
// it once, when it is made.

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Plan is a subscription plan: a rate tier of the organization.
// RequestCount and TimeUnit are both set (a limit) or both empty.
type Plan struct {
	ID               string     `json:"id"`
	OrganizationID   string     `json:"-"`
	Name             string     `json:"name"`
	DisplayName      string     `json:"displayName"`
	RequestCount     *int       `json:"requestCount,omitempty"`
	TimeUnit         string     `json:"timeUnit,omitempty"`
	StopOnQuotaReach bool       `json:"stopOnQuotaReach"`
	ExpiresAt        *time.Time `json:"expiresAt,omitempty"`
	Status           string     `json:"status"`
	CreatedAt        time.Time  `json:"createdAt"`
	UpdatedAt        time.Time  `json:"updatedAt"`
}

// Statuses of plans and subscriptions.
const (
	ConsumerActive   = "ACTIVE"
	ConsumerInactive = "INACTIVE"
)

// ThrottleLimitUnit is the plan's time unit as a gateway's rate limiter
// reads it (Min, Hour, Day or Month), or "" for no limit.
func (p *Plan) ThrottleLimitUnit() string {
	switch p.TimeUnit {
	case "minute":
		return "Min"
	case "hour":
		return "Hour"
	case "day":
		return "Day"
	case "month":
		return "Month"
	}
	return ""
}

const planColumns = `id, organization_id, name, display_name, request_count, time_unit, stop_on_quota_reach,
	expires_at, status, created_at, updated_at`

func scanPlan(row rowScanner) (*Plan, error) {
	var p Plan
	var count sql.NullInt64
	var unit sql.NullString
	err := row.Scan(&p.ID, &p.OrganizationID, &p.Name, &p.DisplayName, &count, &unit, &p.StopOnQuotaReach,
		dbTimePtr{&p.ExpiresAt}, &p.Status, dbTime{&p.CreatedAt}, dbTime{&p.UpdatedAt})
	if count.Valid {
		n := int(count.Int64)
		p.RequestCount = &n
	}
	p.TimeUnit = unit.String
	return &p, err
}

func planArgs(p *Plan) []any {
	var count, unit, expires any
	if p.RequestCount != nil {
		count = *p.RequestCount
	}
	if p.TimeUnit != "" {
		unit = p.TimeUnit
	}
	if p.ExpiresAt != nil {
		expires = formatTime(*p.ExpiresAt)
	}
	return []any{p.ID, p.OrganizationID, p.Name, p.DisplayName, count, unit, p.StopOnQuotaReach, expires, p.Status,
		formatTime(p.CreatedAt), formatTime(p.UpdatedAt)}
}

// planConflict words a broken constraint of the plans table.
func planConflict(p *Plan, err error) error {
	switch constraintOf(err) {
	case uniqueViolation:
		return conflict("a subscription plan named %q already exists in this organization", p.Name)
	case foreignKeyViolation:
		return invalid("organization %s is not registered: create it with POST /api/v1/organizations first", p.OrganizationID)
	case checkViolation:
		return invalid("requestCount and timeUnit: give both or neither")
	}
	return err
}

// CreatePlan stores p (validated) in organization p.OrganizationID and sets
// its id and timestamps. A name in use in the organization is ErrConflict.
func (db *DB) CreatePlan(ctx context.Context, p *Plan) error {
	p.ID = newID()
	return db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		p.CreatedAt, p.UpdatedAt = now, now
		_, err := tx.ExecContext(ctx, `INSERT INTO subscription_plans (`+planColumns+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`, planArgs(p)...)
		if err != nil {
			return planConflict(p, err)
		}
		return tx.planChanged(ctx, now, "created", p)
	})
}

// Plans lists the organization's plans, newest first, and the total.
func (db *DB) Plans(ctx context.Context, orgID string, page Page) ([]*Plan, int, error) {
	list := []*Plan{}
	var total int
	err := db.readTx(ctx, func(tx *Tx) error {
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM subscription_plans WHERE organization_id = $1`, orgID).Scan(&total); err != nil {
			return err
		}
		var err error
		list, err = collect(scanPlan)(tx.QueryContext(ctx, `SELECT `+planColumns+` FROM subscription_plans
			WHERE organization_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3`, orgID, page.Limit, page.Offset))
		return err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("list subscription plans: %w", err)
	}
	return list, total, nil
}

// AllPlans lists every plan of the organization, oldest first: what its
// gateways pull.
func (db *DB) AllPlans(ctx context.Context, orgID string) ([]*Plan, error) {
	var list []*Plan
	err := db.readTx(ctx, func(tx *Tx) error {
		var err error
		list, err = collect(scanPlan)(tx.QueryContext(ctx, `SELECT `+planColumns+` FROM subscription_plans
			WHERE organization_id = $1 ORDER BY created_at, id`, orgID))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list subscription plans: %w", err)
	}
	return list, nil
}

// Plan returns one plan of the organization. A plan of another
// organization is ErrNotFound, exactly like a missing one.
func (db *DB) Plan(ctx context.Context, orgID, id string) (*Plan, error) {
	return findPlan(ctx, db.rstmts, orgID, id)
}

func findPlan(ctx context.Context, q queryer, orgID, id string) (*Plan, error) {
	p, err := scanPlan(q.QueryRowContext(ctx, `SELECT `+planColumns+` FROM subscription_plans
		WHERE id = $1 AND organization_id = $2`, id, orgID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("subscription plan %s not found", id)
	}
	if err != nil {
		return nil, fmt.Errorf("get subscription plan: %w", err)
	}
	return p, nil
}

// UpdatePlan reads the plan, lets change modify it (or refuse with an
// error), and stores it. A rename onto a name in use is ErrConflict.
func (db *DB) UpdatePlan(ctx context.Context, orgID, id string, change func(*Plan) error) (*Plan, error) {
	var p *Plan
	err := db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		if err := tx.lockRow(ctx, "subscription_plans", id); err != nil {
			return err
		}
		var err error
		if p, err = findPlan(ctx, tx, orgID, id); err != nil {
			return err
		}
		created := p.CreatedAt
		if err := change(p); err != nil {
			return err
		}
		p.ID, p.OrganizationID, p.CreatedAt, p.UpdatedAt = id, orgID, created, now
		_, err = tx.ExecContext(ctx, `UPDATE subscription_plans SET name = $3, display_name = $4, request_count = $5,
			time_unit = $6, stop_on_quota_reach = $7, expires_at = $8, status = $9, updated_at = $11
			WHERE id = $1 AND organization_id = $2 AND created_at = $10`, planArgs(p)...)
		if err != nil {
			return planConflict(p, err)
		}
		return tx.planChanged(ctx, now, "updated", p)
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// DeletePlan removes a plan. A plan that a subscription still uses is
// ErrConflict naming the subscriptions (a few of them).
func (db *DB) DeletePlan(ctx context.Context, orgID, id string) error {
	return db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		if err := tx.lockRow(ctx, "subscription_plans", id); err != nil {
			return err
		}
		p, err := findPlan(ctx, tx, orgID, id)
		if err != nil {
			return err
		}
		users, err := queryStrings(ctx, tx, `SELECT id FROM subscriptions WHERE plan_id = $1 ORDER BY created_at, id LIMIT 11`, id)
		if err != nil {
			return err
		}
		if len(users) > 0 {
			return conflict("subscription plan %s is used by %s: delete them or move them to another plan first",
				id, nameSome("subscription", users, 10))
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM subscription_plans WHERE id = $1`, id)
		if constraintOf(err) == foreignKeyViolation { // a subscription made meanwhile
			return conflict("subscription plan %s is used by a subscription: delete it or move it to another plan first", id)
		}
		if err != nil {
			return err
		}
		return tx.planChanged(ctx, now, "deleted", p)
	})
}

// nameSome words a list of names ("subscriptions a, b and 3 more"), of
// which at most max are named.
func nameSome(what string, names []string, max int) string {
	if len(names) != 1 {
		what += "s"
	}
	if len(names) <= max {
		return what + " " + strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s %s and more", what, strings.Join(names[:max], ", "))
}

// Subscription is an application (or another subscriber) subscribed to an
// API under a plan. Token is the plain subscription token: set only in
// what CreateSubscription and RegenerateSubscriptionToken return, and in
// what gateways pull.
type Subscription struct {
	ID             string    `json:"id"`
	OrganizationID string    `json:"-"`
	APIID          string    `json:"apiId"`
	ApplicationID  string    `json:"applicationId,omitempty"`
	SubscriberID   string    `json:"subscriberId,omitempty"`
	PlanID         string    `json:"planId,omitempty"`
	Status         string    `json:"status"`
	Token          string    `json:"subscriptionToken,omitempty"`
	CreatedAt      time.Time `json:"createdAt"`
	UpdatedAt      time.Time `json:"updatedAt"`
	sealed         string    // the token as stored
}

const subscriptionColumns = `id, organization_id, api_id, application_id, subscriber_id, plan_id, token, status,
	created_at, updated_at`

func scanSubscription(row rowScanner) (*Subscription, error) {
	var s Subscription
	var plan sql.NullString
	err := row.Scan(&s.ID, &s.OrganizationID, &s.APIID, &s.ApplicationID, &s.SubscriberID, &plan, &s.sealed, &s.Status,
		dbTime{&s.CreatedAt}, dbTime{&s.UpdatedAt})
	s.PlanID = plan.String
	return &s, err
}

// subscriptionTokenBytes is the randomness of a subscription token (256
// bits).
const subscriptionTokenBytes = 32

// newSubscriptionToken returns a new random token, URL- and header-safe.
func newSubscriptionToken() string {
	b := make([]byte, subscriptionTokenBytes)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// The additional data that binds a sealed value to its row, so that a
// sealed value moved to another row (or another kind of row) does not open.
func subscriptionAAD(id string) string { return "subscription:" + id }

// FilterSubscriptions selects subscriptions; empty fields select all.
type FilterSubscriptions struct {
	APIID         string
	ApplicationID string
	Status        string
}

// checkSubscriptionRefs checks that the API and the plan of s are the
// organization's (ErrInvalid naming the field otherwise).
func checkSubscriptionRefs(ctx context.Context, tx *Tx, s *Subscription) error {
	if _, err := findAPIRow(ctx, tx, s.OrganizationID, s.APIID); errors.Is(err, ErrNotFound) {
		return invalid("apiId: API %s not found in this organization", s.APIID)
	} else if err != nil {
		return err
	}
	if s.PlanID != "" {
		if _, err := findPlan(ctx, tx, s.OrganizationID, s.PlanID); errors.Is(err, ErrNotFound) {
			return invalid("planId: subscription plan %s not found in this organization", s.PlanID)
		} else if err != nil {
			return err
		}
	}
	if s.ApplicationID != "" {
		return checkApplication(ctx, tx, s.OrganizationID, &s.ApplicationID)
	}
	return nil
}

// deleteApplicationSubscriptions deletes the subscriptions of an
// application being deleted, and tells the gateways of their APIs.
func deleteApplicationSubscriptions(ctx context.Context, tx *Tx, now time.Time, orgID, appID string) error {
	subs, err := collect(scanSubscription)(tx.QueryContext(ctx, `SELECT `+subscriptionColumns+` FROM subscriptions
		WHERE organization_id = $1 AND application_id = $2 ORDER BY created_at, id`, orgID, appID))
	if err != nil || len(subs) == 0 {
		return err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM subscriptions WHERE organization_id = $1 AND application_id = $2`, orgID, appID); err != nil {
		return fmt.Errorf("delete the application's subscriptions: %w", err)
	}
	for _, s := range subs {
		if s.Token, err = tx.sealer.open(s.sealed, subscriptionAAD(s.ID)); err != nil {
			return fmt.Errorf("subscription %s: %w", s.ID, err)
		}
		if err := tx.subscriptionChanged(ctx, now, "deleted", s); err != nil {
			return err
		}
	}
	return nil
}

// subscriptionConflict words a broken constraint of the subscriptions
// table.
func subscriptionConflict(s *Subscription, err error) error {
	switch constraintOf(err) {
	case uniqueViolation:
		return conflict("application %s already has an active subscription to API %s: update or delete that one first",
			s.ApplicationID, s.APIID)
	case foreignKeyViolation:
		return invalid("apiId or planId: the API or the plan no longer exists")
	}
	return err
}

// CreateSubscription stores s (validated) and sets its id, timestamps and
// a new token (s.Token, plain: shown once). A second active subscription
// of one application to one API is ErrConflict.
func (db *DB) CreateSubscription(ctx context.Context, s *Subscription) error {
	s.ID = newID()
	return db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		if err := checkSubscriptionRefs(ctx, tx, s); err != nil {
			return err
		}
		s.CreatedAt, s.UpdatedAt = now, now
		s.Token = newSubscriptionToken()
		s.sealed = tx.sealer.seal(s.Token, subscriptionAAD(s.ID))
		_, err := tx.ExecContext(ctx, `INSERT INTO subscriptions (`+subscriptionColumns+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)`, s.ID, s.OrganizationID, s.APIID, s.ApplicationID,
			s.SubscriberID, nullable(s.PlanID), s.sealed, s.Status, formatTime(now))
		if err != nil {
			return subscriptionConflict(s, err)
		}
		return tx.subscriptionChanged(ctx, now, "created", s)
	})
}

// nullable is v, or NULL when v is empty.
func nullable(v string) any {
	if v == "" {
		return nil
	}
	return v
}

// Subscriptions lists the organization's subscriptions that f selects,
// newest first, and the total. Tokens are not set.
func (db *DB) Subscriptions(ctx context.Context, orgID string, f FilterSubscriptions, page Page) ([]*Subscription, int, error) {
	cond, args := `WHERE organization_id = $1`, []any{orgID}
	for _, c := range []struct{ col, v string }{{"api_id", f.APIID}, {"application_id", f.ApplicationID}, {"status", f.Status}} {
		if c.v != "" {
			args = append(args, c.v)
			cond += fmt.Sprintf(` AND %s = $%d`, c.col, len(args))
		}
	}
	list := []*Subscription{}
	var total int
	err := db.readTx(ctx, func(tx *Tx) error {
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM subscriptions `+cond, args...).Scan(&total); err != nil {
			return err
		}
		n := len(args)
		var err error
		list, err = collect(scanSubscription)(tx.QueryContext(ctx, fmt.Sprintf(`SELECT `+subscriptionColumns+`
			FROM subscriptions %s ORDER BY created_at DESC, id DESC LIMIT $%d OFFSET $%d`, cond, n+1, n+2),
			append(args, page.Limit, page.Offset)...))
		return err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("list subscriptions: %w", err)
	}
	return list, total, nil
}

// Subscription returns one subscription of the organization, without its
// token. One of another organization is ErrNotFound, like a missing one.
func (db *DB) Subscription(ctx context.Context, orgID, id string) (*Subscription, error) {
	return findSubscription(ctx, db.rstmts, orgID, id)
}

func findSubscription(ctx context.Context, q queryer, orgID, id string) (*Subscription, error) {
	s, err := scanSubscription(q.QueryRowContext(ctx, `SELECT `+subscriptionColumns+` FROM subscriptions
		WHERE id = $1 AND organization_id = $2`, id, orgID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("subscription %s not found", id)
	}
	if err != nil {
		return nil, fmt.Errorf("get subscription: %w", err)
	}
	return s, nil
}

// UpdateSubscription reads the subscription, lets change modify it (or
// refuse with an error), and stores it; its API and application never
// change. The answer has no token.
func (db *DB) UpdateSubscription(ctx context.Context, orgID, id string, change func(*Subscription) error) (*Subscription, error) {
	return db.rewriteSubscription(ctx, orgID, id, change, false)
}

// RegenerateSubscriptionToken gives the subscription a new token and
// returns it with the token (plain: shown once). The old token stops
// working on every gateway.
func (db *DB) RegenerateSubscriptionToken(ctx context.Context, orgID, id string) (*Subscription, error) {
	return db.rewriteSubscription(ctx, orgID, id, nil, true)
}

func (db *DB) rewriteSubscription(ctx context.Context, orgID, id string, change func(*Subscription) error, newToken bool) (*Subscription, error) {
	var s *Subscription
	err := db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		if err := tx.lockRow(ctx, "subscriptions", id); err != nil {
			return err
		}
		var err error
		if s, err = findSubscription(ctx, tx, orgID, id); err != nil {
			return err
		}
		keep := *s
		if change != nil {
			if err := change(s); err != nil {
				return err
			}
		}
		s.ID, s.OrganizationID, s.APIID, s.ApplicationID, s.CreatedAt, s.UpdatedAt = id, orgID, keep.APIID, keep.ApplicationID, keep.CreatedAt, now
		if s.PlanID != keep.PlanID {
			if err := checkSubscriptionRefs(ctx, tx, s); err != nil {
				return err
			}
		}
		if newToken {
			s.Token = newSubscriptionToken()
			s.sealed = tx.sealer.seal(s.Token, subscriptionAAD(s.ID))
		}
		_, err = tx.ExecContext(ctx, `UPDATE subscriptions SET subscriber_id = $2, plan_id = $3, token = $4, status = $5,
			updated_at = $6 WHERE id = $1`, id, s.SubscriberID, nullable(s.PlanID), s.sealed, s.Status, formatTime(now))
		if err != nil {
			return subscriptionConflict(s, err)
		}
		if !newToken {
			// The event carries the token: open the one kept.
			if s.Token, err = tx.sealer.open(s.sealed, subscriptionAAD(s.ID)); err != nil {
				return fmt.Errorf("subscription %s: %w", id, err)
			}
		}
		if err := tx.subscriptionChanged(ctx, now, "updated", s); err != nil {
			return err
		}
		if !newToken {
			s.Token = ""
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// DeleteSubscription removes a subscription of the organization.
func (db *DB) DeleteSubscription(ctx context.Context, orgID, id string) error {
	return db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		if err := tx.lockRow(ctx, "subscriptions", id); err != nil {
			return err
		}
		s, err := findSubscription(ctx, tx, orgID, id)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM subscriptions WHERE id = $1`, id); err != nil {
			return err
		}
		if s.Token, err = tx.sealer.open(s.sealed, subscriptionAAD(s.ID)); err != nil {
			return fmt.Errorf("subscription %s: %w", id, err)
		}
		return tx.subscriptionChanged(ctx, now, "deleted", s)
	})
}

// GatewaySubscriptions returns every subscription of an API deployed to the
// gateway, tokens opened, oldest first: what the gateway pulls. An API
// unknown to the gateway's organization is ErrNotFound; one not deployed
// to this gateway is ErrNotDeployed.
func (db *DB) GatewaySubscriptions(ctx context.Context, gatewayID, orgID, apiID string) ([]*Subscription, error) {
	var list []*Subscription
	err := db.readTx(ctx, func(tx *Tx) error {
		if _, err := findAPIRow(ctx, tx, orgID, apiID); err != nil {
			return err
		}
		var deployed bool
		if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM deployments WHERE api_id = $1 AND gateway_id = $2
			AND state = $3)`, apiID, gatewayID, StateDeployed).Scan(&deployed); err != nil {
			return err
		}
		if !deployed {
			return notDeployed(apiID)
		}
		var err error
		list, err = apiSubscriptions(ctx, tx, apiID)
		return err
	})
	if err != nil {
		return nil, err
	}
	return list, nil
}

// ErrNotDeployed is the kind of error of a gateway asking about an API of
// its organization that is not deployed to it (403).
var ErrNotDeployed = errors.New("not deployed to this gateway")

// notDeployedError is an error of kind ErrNotDeployed.
type notDeployedError struct{ apiID string }

func notDeployed(apiID string) error { return &notDeployedError{apiID} }

func (e *notDeployedError) Error() string {
	return fmt.Sprintf("API %s is not deployed to this gateway", e.apiID)
}
func (e *notDeployedError) Unwrap() error   { return ErrNotDeployed }
func (e *notDeployedError) HTTPStatus() int { return http.StatusForbidden }

// apiSubscriptions returns the subscriptions of an API, tokens opened,
// oldest first.
func apiSubscriptions(ctx context.Context, tx *Tx, apiID string) ([]*Subscription, error) {
	list, err := collect(scanSubscription)(tx.QueryContext(ctx, `SELECT `+subscriptionColumns+` FROM subscriptions
		WHERE api_id = $1 ORDER BY created_at, id`, apiID))
	if err != nil {
		return nil, err
	}
	for _, s := range list {
		if s.Token, err = tx.sealer.open(s.sealed, subscriptionAAD(s.ID)); err != nil {
			return nil, fmt.Errorf("subscription %s: %w", s.ID, err)
		}
	}
	return list, nil
}
