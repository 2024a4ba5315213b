package api

import (
	"fmt"

	"platform-api/httpx"
	"platform-api/store"
)

// The secret fields of an API (mTLS client keys) are never answered: the
// public API shows SecretMask in their place, and a PUT that sends the mask
// back keeps the stored secret. Only a gateway's download of a revision
// deployed to it holds them (store.OpenSecrets).

// SecretMask stands for a stored secret.
const SecretMask = "********"

// masked replaces the secrets of a (read back from the store) with the mask.
func masked(a *store.API) *store.API {
	for _, f := range store.SecretFields(a) {
		if *f != "" {
			*f = SecretMask
		}
	}
	return a
}

// checkSecretInput refuses, in a request body, a secret in the store's
// sealed form (only the server seals), and on a create the mask (there is
// nothing stored to keep).
func checkSecretInput(a *store.API, creating bool) error {
	var e httpx.FieldErrors
	for path, v := range secretPaths(a) {
		switch {
		case store.IsSealed(*v):
			e.Add(path, "must be PEM text")
		case creating && *v == SecretMask:
			e.Add(path, "%s stands for a stored key, and this API has none yet; send the key itself", SecretMask)
		}
	}
	return e.Err()
}

// secretPaths returns the secret fields of a by their JSON path. Endpoint
// secrets are named by backend name and endpoint URL, so that a kept
// secret follows its endpoint when the list is reordered.
func secretPaths(a *store.API) map[string]*string {
	out := map[string]*string{}
	if a.MTLS != nil {
		out["mtls.clientKey"] = &a.MTLS.ClientKey
	}
	for i := range a.BackendServices {
		b := &a.BackendServices[i]
		for j := range b.Endpoints {
			if m := b.Endpoints[j].MTLS; m != nil {
				out[fmt.Sprintf("backend-services[%d].endpoints[%d].mtls.clientKey", i, j)] = &m.ClientKey
			}
		}
	}
	return out
}

// secretKey locates a secret independently of list positions.
type secretKey struct{ backend, url string }

// storedSecrets records the stored (sealed) secrets of a by location.
func storedSecrets(a *store.API) map[secretKey]string {
	out := map[secretKey]string{}
	if a.MTLS != nil && a.MTLS.ClientKey != "" {
		out[secretKey{}] = a.MTLS.ClientKey
	}
	for _, b := range a.BackendServices {
		for _, ep := range b.Endpoints {
			if ep.MTLS != nil && ep.MTLS.ClientKey != "" {
				out[secretKey{b.Name, ep.URL}] = ep.MTLS.ClientKey
			}
		}
	}
	return out
}

// keepMaskedSecrets puts back the stored secret wherever an update sent the
// mask; a mask where nothing is stored is a 400.
func keepMaskedSecrets(a *store.API, kept map[secretKey]string) error {
	var e httpx.FieldErrors
	keep := func(path string, v *string, k secretKey) {
		if *v != SecretMask {
			return
		}
		if old, ok := kept[k]; ok {
			*v = old
		} else {
			e.Add(path, "%s stands for a stored key, but none is stored here; send the key itself", SecretMask)
		}
	}
	if a.MTLS != nil {
		keep("mtls.clientKey", &a.MTLS.ClientKey, secretKey{})
	}
	for i := range a.BackendServices {
		b := &a.BackendServices[i]
		for j := range b.Endpoints {
			if m := b.Endpoints[j].MTLS; m != nil {
				keep(fmt.Sprintf("backend-services[%d].endpoints[%d].mtls.clientKey", i, j), &m.ClientKey, secretKey{b.Name, b.Endpoints[j].URL})
			}
		}
	}
	return e.Err()
}
