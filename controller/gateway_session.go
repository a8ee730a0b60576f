package controller

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"time"

	gwapi "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/nodegress/nodegress/l7proxy"
)

// defaultGatewaySessionName names the session cookie of an HTTPRoute rule
// whose sessionPersistence has no sessionName (implementation-specific).
const defaultGatewaySessionName = "NODEGRESS_SESSION"

// sessionAffinity translates an HTTPRoute rule's sessionPersistence (an
// experimental-channel field) into the proxy's cookie affinity, keyed by
// the route's UID as Ingress cookies are by theirs. Header-based
// persistence is refused, so the rule answers 500 rather than balancing
// without the persistence it asks for.
func sessionAffinity(sp *gwapi.SessionPersistence, r *gwapi.HTTPRoute) (*l7proxy.CookieAffinity, error) {
	if sp.Type != nil && *sp.Type != gwapi.CookieBasedSessionPersistence {
		return nil, fmt.Errorf("sessionPersistence type %q is not supported (Cookie only)", *sp.Type)
	}
	name := defaultGatewaySessionName
	if sp.SessionName != nil && *sp.SessionName != "" {
		name = *sp.SessionName
		if !isCookieName(name) {
			return nil, fmt.Errorf("sessionPersistence sessionName %q is not a cookie name", name)
		}
	}
	a := &l7proxy.CookieAffinity{Name: name}
	permanent := sp.CookieConfig != nil && sp.CookieConfig.LifetimeType != nil &&
		*sp.CookieConfig.LifetimeType == gwapi.PermanentCookieLifetimeType
	if permanent {
		if sp.AbsoluteTimeout == nil {
			return nil, errors.New("sessionPersistence: a Permanent cookie needs absoluteTimeout")
		}
		d, err := time.ParseDuration(string(*sp.AbsoluteTimeout))
		if err != nil || d < time.Second || d.Seconds() > math.MaxInt32 {
			return nil, fmt.Errorf("sessionPersistence absoluteTimeout %q: want at least 1s", *sp.AbsoluteTimeout)
		}
		a.MaxAge = int(d / time.Second)
	}
	sum := sha256.Sum256([]byte("nodegress session cookie\x00" + string(r.UID) + "\x00" + r.Namespace + "/" + r.Name))
	a.Key = sum[:]
	return a, nil
}
