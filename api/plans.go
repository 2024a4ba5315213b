package api

// Subscription plans and subscriptions (contract §7).

import (
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"time"

	"platform-api/auth"
	"platform-api/httpx"
	"platform-api/store"
)

// resourceNamePattern is the rule of §7 names (plans, secrets): a handle
// of lower-case letters and digits, words joined by one '-' or '_'; 3–63
// characters.
var resourceNamePattern = regexp.MustCompile(`^[a-z0-9]+([_-][a-z0-9]+)*$`)

// checkResourceName checks a §7 name at path.
func checkResourceName(errs *httpx.FieldErrors, path, v string) {
	switch {
	case v == "":
		errs.Add(path, "is required")
	case len(v) < 3 || len(v) > 63:
		errs.Add(path, "must be 3 to 63 characters, not %d", len(v))
	case !resourceNamePattern.MatchString(v):
		errs.Add(path, "must be lower-case letters and digits, words joined by one '-' or '_' (%s), not %q",
			resourceNamePattern, v)
	}
}

// maxRequestCount bounds a plan's requestCount (what gateways keep in a
// 32-bit counter).
const maxRequestCount = 1<<31 - 1

// planUnits are the time units of a plan's limit.
var planUnits = map[string]bool{"minute": true, "hour": true, "day": true, "month": true}

type planRequest struct {
	Name             *string `json:"name"`
	DisplayName      *string `json:"displayName"`
	RequestCount     *int64  `json:"requestCount"`
	TimeUnit         *string `json:"timeUnit"`
	StopOnQuotaReach *bool   `json:"stopOnQuotaReach"`
	ExpiresAt        *string `json:"expiresAt"`
	Status           *string `json:"status"`
	creating         bool
	expires          *time.Time // ExpiresAt, parsed
	// nulls are the fields a PUT gives as JSON null: requestCount and
	// timeUnit null clear the limit, expiresAt null the expiry (a field
	// left out is left alone).
	nulls map[string]bool
}

func (p *planRequest) Validate(context.Context) error {
	var errs httpx.FieldErrors
	if p.Name != nil || p.creating {
		checkResourceName(&errs, "name", deref(p.Name))
	}
	if p.DisplayName != nil {
		httpx.CheckText(&errs, "displayName", *p.DisplayName, false, 128)
	}
	if p.RequestCount != nil && (*p.RequestCount < 1 || *p.RequestCount > maxRequestCount) {
		errs.Add("requestCount", "must be from 1 to %d, not %d", maxRequestCount, *p.RequestCount)
	}
	if p.TimeUnit != nil && !planUnits[*p.TimeUnit] {
		errs.Add("timeUnit", "must be minute, hour, day or month, not %q", *p.TimeUnit)
	}
	if p.creating && (p.RequestCount == nil) != (p.TimeUnit == nil) {
		errs.Add("requestCount and timeUnit", "give both (a limit of requestCount requests per timeUnit) or neither (no limit)")
	}
	if p.Status != nil && *p.Status != store.ConsumerActive && *p.Status != store.ConsumerInactive {
		errs.Add("status", "must be ACTIVE or INACTIVE, not %q", *p.Status)
	}
	if p.ExpiresAt != nil {
		t, err := time.Parse(time.RFC3339Nano, *p.ExpiresAt)
		switch {
		case err != nil:
			errs.Add("expiresAt", "must be an RFC 3339 time such as 2030-01-31T00:00:00Z, not %q", *p.ExpiresAt)
		case !t.After(time.Now()):
			errs.Add("expiresAt", "must be in the future")
		default:
			t = t.UTC().Truncate(time.Microsecond)
			p.expires = &t
		}
	}
	return errs.Err()
}

// apply sets the fields present in p on plan.
func (p *planRequest) apply(plan *store.Plan) error {
	if p.Name != nil {
		plan.Name = *p.Name
	}
	if p.DisplayName != nil {
		plan.DisplayName = *p.DisplayName
	}
	if p.RequestCount != nil {
		n := int(*p.RequestCount)
		plan.RequestCount = &n
	}
	if p.TimeUnit != nil {
		plan.TimeUnit = *p.TimeUnit
	}
	if p.StopOnQuotaReach != nil {
		plan.StopOnQuotaReach = *p.StopOnQuotaReach
	}
	if p.expires != nil {
		plan.ExpiresAt = p.expires
	}
	if p.nulls["requestCount"] {
		plan.RequestCount = nil
	}
	if p.nulls["timeUnit"] {
		plan.TimeUnit = ""
	}
	if p.nulls["expiresAt"] {
		plan.ExpiresAt = nil
	}
	if p.Status != nil {
		plan.Status = *p.Status
	}
	if (plan.RequestCount == nil) != (plan.TimeUnit == "") {
		return httpx.BadRequest("requestCount and timeUnit: give both (a limit of requestCount requests per timeUnit) or neither (no limit)")
	}
	return nil
}

func (s *Server) createPlan(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	req := planRequest{creating: true}
	if err := httpx.Decode(w, r, s.maxBody, &req); err != nil {
		return err
	}
	plan := &store.Plan{OrganizationID: p.OrganizationID, StopOnQuotaReach: true, Status: store.ConsumerActive}
	if err := req.apply(plan); err != nil {
		return err
	}
	if plan.DisplayName == "" {
		plan.DisplayName = plan.Name
	}
	if err := s.store.CreatePlan(r.Context(), plan); err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusCreated, plan)
	return nil
}

func (s *Server) listPlans(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	page, err := httpx.ParsePage(r)
	if err != nil {
		return err
	}
	list, total, err := s.store.Plans(r.Context(), p.OrganizationID, store.Page(page))
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, httpx.NewList(list, total, page))
	return nil
}

func (s *Server) getPlan(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	plan, err := s.store.Plan(r.Context(), p.OrganizationID, r.PathValue("planId"))
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, plan)
	return nil
}

func (s *Server) updatePlan(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	var req planRequest
	if err := httpx.CheckJSONContentType(r); err != nil {
		return err
	}
	data, err := httpx.ReadBody(w, r, s.maxBody)
	if err != nil {
		return err
	}
	if err := httpx.DecodeJSON(data, &req, true); err != nil {
		return err
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return httpx.JSONError(err)
	}
	req.nulls = map[string]bool{}
	for k, v := range fields {
		req.nulls[k] = string(v) == "null"
	}
	if err := req.Validate(r.Context()); err != nil {
		return err
	}
	plan, err := s.store.UpdatePlan(r.Context(), p.OrganizationID, r.PathValue("planId"), req.apply)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, plan)
	return nil
}

func (s *Server) deletePlan(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if err := s.store.DeletePlan(r.Context(), p.OrganizationID, r.PathValue("planId")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

type subscriptionRequest struct {
	APIID         *string `json:"apiId"`
	ApplicationID *string `json:"applicationId"`
	SubscriberID  *string `json:"subscriberId"`
	PlanID        *string `json:"planId"`
	Status        *string `json:"status"`
	creating      bool
}

func (q *subscriptionRequest) Validate(context.Context) error {
	var errs httpx.FieldErrors
	if q.creating || q.APIID != nil {
		checkID(&errs, "apiId", deref(q.APIID), q.creating)
	}
	if q.ApplicationID != nil {
		checkID(&errs, "applicationId", *q.ApplicationID, false)
	}
	if q.PlanID != nil {
		checkID(&errs, "planId", *q.PlanID, false)
	}
	if q.SubscriberID != nil {
		httpx.CheckText(&errs, "subscriberId", *q.SubscriberID, false, 256)
	}
	if q.Status != nil && *q.Status != store.ConsumerActive && *q.Status != store.ConsumerInactive {
		errs.Add("status", "must be ACTIVE or INACTIVE, not %q", *q.Status)
	}
	return errs.Err()
}

// checkID checks an id field: a UUID in canonical form (or empty when not
// required).
func checkID(errs *httpx.FieldErrors, path, v string, required bool) {
	switch {
	case v == "" && required:
		errs.Add(path, "is required")
	case v != "" && !httpx.IsID(v):
		errs.Add(path, "must be a UUID in canonical lower-case form, not %q", v)
	}
}

func (s *Server) createSubscription(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	req := subscriptionRequest{creating: true}
	if err := httpx.Decode(w, r, s.maxBody, &req); err != nil {
		return err
	}
	sub := &store.Subscription{OrganizationID: p.OrganizationID, APIID: *req.APIID, ApplicationID: deref(req.ApplicationID),
		SubscriberID: deref(req.SubscriberID), PlanID: deref(req.PlanID), Status: store.ConsumerActive}
	if req.Status != nil {
		sub.Status = *req.Status
	}
	if err := s.store.CreateSubscription(r.Context(), sub); err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusCreated, sub)
	return nil
}

func (s *Server) listSubscriptions(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	page, err := httpx.ParsePage(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	f := store.FilterSubscriptions{APIID: q.Get("apiId"), ApplicationID: q.Get("applicationId"), Status: q.Get("status")}
	var errs httpx.FieldErrors
	checkID(&errs, "apiId", f.APIID, false)
	checkID(&errs, "applicationId", f.ApplicationID, false)
	if f.Status != "" && f.Status != store.ConsumerActive && f.Status != store.ConsumerInactive {
		errs.Add("status", "must be ACTIVE or INACTIVE, not %q", f.Status)
	}
	if err := errs.Err(); err != nil {
		return err
	}
	list, total, err := s.store.Subscriptions(r.Context(), p.OrganizationID, f, store.Page(page))
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, httpx.NewList(list, total, page))
	return nil
}

func (s *Server) getSubscription(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	sub, err := s.store.Subscription(r.Context(), p.OrganizationID, r.PathValue("subscriptionId"))
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, sub)
	return nil
}

func (s *Server) updateSubscription(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	var req subscriptionRequest
	if err := httpx.Decode(w, r, s.maxBody, &req); err != nil {
		return err
	}
	sub, err := s.store.UpdateSubscription(r.Context(), p.OrganizationID, r.PathValue("subscriptionId"), func(sub *store.Subscription) error {
		var errs httpx.FieldErrors
		if req.APIID != nil && *req.APIID != sub.APIID {
			errs.Add("apiId", "cannot be changed: make a new subscription instead")
		}
		if req.ApplicationID != nil && *req.ApplicationID != sub.ApplicationID {
			errs.Add("applicationId", "cannot be changed: make a new subscription instead")
		}
		if err := errs.Err(); err != nil {
			return err
		}
		if req.SubscriberID != nil {
			sub.SubscriberID = *req.SubscriberID
		}
		if req.PlanID != nil {
			sub.PlanID = *req.PlanID
		}
		if req.Status != nil {
			sub.Status = *req.Status
		}
		return nil
	})
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, sub)
	return nil
}

func (s *Server) regenerateSubscriptionToken(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	sub, err := s.store.RegenerateSubscriptionToken(r.Context(), p.OrganizationID, r.PathValue("subscriptionId"))
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, sub)
	return nil
}

func (s *Server) deleteSubscription(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if err := s.store.DeleteSubscription(r.Context(), p.OrganizationID, r.PathValue("subscriptionId")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
