package l7proxy

import (
	"bytes"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// BasicAuth asks for a user name and password (RFC 7617), checked against
// htpasswd-style hashes; a request without valid ones gets 401 with a
// WWW-Authenticate challenge.
type BasicAuth struct {
	// Realm is shown by browsers in the login prompt.
	Realm string
	// Users maps user names to password hashes, as CheckPasswordHash
	// accepts them.
	Users map[string]string

	challenge []Field // built by NewBasicAuth
}

// NewBasicAuth returns a BasicAuth for users; an invalid hash is an
// error.
func NewBasicAuth(realm string, users map[string]string) (*BasicAuth, error) {
	for u, h := range users {
		if err := CheckPasswordHash(h); err != nil {
			return nil, fmt.Errorf("user %q: %w", u, err)
		}
	}
	b := &BasicAuth{Realm: realm, Users: users}
	b.challenge = b.challengeFields()
	return b, nil
}

// challengeFields is the WWW-Authenticate field of a 401.
func (b *BasicAuth) challengeFields() []Field {
	if b.challenge != nil {
		return b.challenge
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(b.Realm)
	return []Field{{Name: "Www-Authenticate", Value: `Basic realm="` + r + `"`}}
}

// ParseHtpasswd reads an htpasswd file: one "user:hash" per line, blank
// lines and '#' comments ignored. The first line of a user wins, as in
// nginx. Every hash must be of a kind CheckPasswordHash accepts.
func ParseHtpasswd(data []byte) (map[string]string, error) {
	users := map[string]string{}
	for i, line := range bytes.Split(data, []byte("\n")) {
		line = bytes.TrimRight(line, "\r")
		if len(bytes.TrimSpace(line)) == 0 || line[0] == '#' {
			continue
		}
		user, hash, ok := bytes.Cut(line, []byte(":"))
		if !ok || len(user) == 0 {
			return nil, fmt.Errorf("line %d: want user:hash", i+1)
		}
		if err := CheckPasswordHash(string(hash)); err != nil {
			return nil, fmt.Errorf("line %d (user %q): %w", i+1, user, err)
		}
		if _, dup := users[string(user)]; !dup {
			users[string(user)] = string(hash)
		}
	}
	if len(users) == 0 {
		return nil, errors.New("no user")
	}
	return users, nil
}

// Password hash kinds.
const (
	apr1Magic = "$apr1$"
	shaPrefix = "{SHA}"
)

// maxBcryptCost is the highest bcrypt cost accepted. Each step doubles
// the work: 14 is about a second of one core per check, which the few
// bcrypt slots (bcryptSlots) can still serve; htpasswd goes up to 17
// (ten seconds and more), with which one Ingress's logins would hold the
// slots every other Ingress's logins wait for. htpasswd's default is 5,
// and ingress-nginx's basic auth example uses its default MD5 hashes.
const maxBcryptCost = 14

// bcryptHashLen is the length of a bcrypt hash ("$2y$10$" + 53 characters).
const bcryptHashLen = 60

var errHashKind = errors.New("unsupported password hash: want bcrypt ($2y$, $2a$, $2b$), Apache MD5 ($apr1$) or {SHA}")

// CheckPasswordHash reports whether a hash is of a supported kind and
// well formed: bcrypt ("$2y$", "$2a$", "$2b$"), Apache's MD5 ("$apr1$")
// or unsalted SHA-1 ("{SHA}"), the kinds htpasswd writes and nginx reads.
// Traditional DES crypt and plain text are refused.
func CheckPasswordHash(h string) error {
	switch {
	case strings.HasPrefix(h, "$2y$"), strings.HasPrefix(h, "$2a$"), strings.HasPrefix(h, "$2b$"):
		cost, err := bcrypt.Cost([]byte(h))
		if err != nil {
			return fmt.Errorf("bcrypt hash: %w", err)
		}
		if cost > maxBcryptCost {
			return fmt.Errorf("bcrypt cost %d is above %d (htpasswd's maximum): each check would take too long", cost, maxBcryptCost)
		}
		// A hash of the wrong length would only fail at comparison time.
		if len(h) != bcryptHashLen {
			return fmt.Errorf("bcrypt hash: want %d characters", bcryptHashLen)
		}
	case strings.HasPrefix(h, apr1Magic):
		salt, sum, ok := strings.Cut(h[len(apr1Magic):], "$")
		if !ok || salt == "" || len(salt) > 8 || len(sum) != 22 {
			return errors.New("apr1 hash: want $apr1$salt$22 characters")
		}
	case strings.HasPrefix(h, shaPrefix):
		if b, err := base64.StdEncoding.DecodeString(h[len(shaPrefix):]); err != nil || len(b) != sha1.Size {
			return errors.New("{SHA} hash: want base64 of 20 bytes")
		}
	default:
		return errHashKind
	}
	return nil
}

// verifyPassword checks a password against a hash CheckPasswordHash
// accepted.
func verifyPassword(hash, password string) bool {
	switch {
	case strings.HasPrefix(hash, apr1Magic):
		salt, _, _ := strings.Cut(hash[len(apr1Magic):], "$")
		return subtle.ConstantTimeCompare([]byte(apr1(password, salt)), []byte(hash)) == 1
	case strings.HasPrefix(hash, shaPrefix):
		sum := sha1.Sum([]byte(password))
		want := shaPrefix + base64.StdEncoding.EncodeToString(sum[:])
		return subtle.ConstantTimeCompare([]byte(want), []byte(hash)) == 1
	case isBcrypt(hash):
		return bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)) == nil
	}
	return false
}

func isBcrypt(hash string) bool { return strings.HasPrefix(hash, "$2") }

// bcrypt is slow by design: at most half the cores run it, so a flood of
// wrong passwords cannot take the whole proxy. The slots are the node's,
// shared by every Ingress; acquireBcrypt bounds the wait for one.
var bcryptSlots = make(chan struct{}, max(1, runtime.NumCPU()/2))

// Reasons a bcrypt check was not run.
var (
	errBcryptBusy = errors.New("no bcrypt slot within the wait")
	errClientLeft = errors.New("client gone while waiting for a bcrypt slot")
)

// goneCheckInterval is how often a wait for a bcrypt slot looks whether
// the client is still there.
const goneCheckInterval = 50 * time.Millisecond

// acquireBcrypt takes a bcrypt slot, waiting at most wait, and giving up
// as soon as gone (nil: never) reports the client went away: a request
// nobody waits for must not take a slot from one somebody does. Release
// a slot taken with releaseBcrypt.
func acquireBcrypt(wait time.Duration, gone func() bool) error {
	select {
	case bcryptSlots <- struct{}{}:
		return nil
	default:
	}
	timeout := time.NewTimer(wait)
	defer timeout.Stop()
	tick := time.NewTicker(goneCheckInterval)
	defer tick.Stop()
	for {
		select {
		case bcryptSlots <- struct{}{}:
			return nil
		case <-timeout.C:
			return errBcryptBusy
		case <-tick.C:
			if gone != nil && gone() {
				return errClientLeft
			}
		}
	}
}

func releaseBcrypt() { <-bcryptSlots }

// apr1 is Apache's MD5-based crypt ("$apr1$salt$hash"), the BSD MD5 crypt
// algorithm with Apache's magic string.
func apr1(password, salt string) string {
	pw := []byte(password)
	alt := md5.New()
	alt.Write(pw)
	alt.Write([]byte(salt))
	alt.Write(pw)
	altSum := alt.Sum(nil)

	ctx := md5.New()
	ctx.Write(pw)
	ctx.Write([]byte(apr1Magic))
	ctx.Write([]byte(salt))
	for i := len(pw); i > 0; i -= 16 {
		ctx.Write(altSum[:min(i, 16)])
	}
	for i := len(pw); i > 0; i >>= 1 {
		if i&1 != 0 {
			ctx.Write([]byte{0})
		} else {
			ctx.Write(pw[:1])
		}
	}
	final := ctx.Sum(nil)
	// A thousand rounds, to make guessing slower.
	for i := range 1000 {
		r := md5.New()
		if i&1 != 0 {
			r.Write(pw)
		} else {
			r.Write(final)
		}
		if i%3 != 0 {
			r.Write([]byte(salt))
		}
		if i%7 != 0 {
			r.Write(pw)
		}
		if i&1 != 0 {
			r.Write(final)
		} else {
			r.Write(pw)
		}
		final = r.Sum(final[:0])
	}
	const itoa64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	out := make([]byte, 0, len(apr1Magic)+len(salt)+1+22)
	out = append(out, apr1Magic...)
	out = append(out, salt...)
	out = append(out, '$')
	enc := func(v uint32, n int) {
		for ; n > 0; n-- {
			out = append(out, itoa64[v&0x3f])
			v >>= 6
		}
	}
	for _, g := range [][3]int{{0, 6, 12}, {1, 7, 13}, {2, 8, 14}, {3, 9, 15}, {4, 10, 5}} {
		enc(uint32(final[g[0]])<<16|uint32(final[g[1]])<<8|uint32(final[g[2]]), 4)
	}
	enc(uint32(final[11]), 2)
	return string(out)
}

// check reports whether the request carries valid credentials. A bcrypt
// hash is checked only when a slot frees within wait and while gone
// (nil: never) says the client is there; otherwise the error says why
// nothing was checked.
func (b *BasicAuth) check(req routedRequest, verified *verifiedCache, wait time.Duration, gone func() bool) (bool, error) {
	v, ok := req.headerValue("Authorization")
	if !ok || len(v) < 6 || !strings.EqualFold(v[:6], "basic ") {
		return false, nil
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(v[6:]))
	if err != nil {
		return false, nil
	}
	user, password, ok := strings.Cut(string(raw), ":")
	if !ok {
		return false, nil
	}
	hash, ok := b.Users[user]
	if !ok {
		return false, nil
	}
	// bcrypt costs tens of milliseconds by design: a credential that was
	// verified once is remembered (by a digest, never in clear) so that a
	// logged-in client does not pay it on every request.
	key := sha256.Sum256([]byte(hash + "\x00" + user + "\x00" + password))
	if verified != nil && verified.has(key) {
		return true, nil
	}
	if isBcrypt(hash) {
		if err := acquireBcrypt(wait, gone); err != nil {
			return false, err
		}
		defer releaseBcrypt()
	}
	if !verifyPassword(hash, password) {
		return false, nil
	}
	if verified != nil {
		verified.add(key)
	}
	return true, nil
}

// maxVerified bounds the remembered credentials of one Ingress.
const maxVerified = 1024

// verifiedCache remembers digests of credentials verified recently. Only
// valid credentials get in, so it cannot be filled by guessing; when full
// it starts over.
type verifiedCache struct {
	mu   sync.Mutex
	max  int
	seen map[[sha256.Size]byte]struct{}
}

func newVerifiedCache(n int) *verifiedCache {
	return &verifiedCache{max: n, seen: map[[sha256.Size]byte]struct{}{}}
}

func (c *verifiedCache) has(k [sha256.Size]byte) bool {
	c.mu.Lock()
	_, ok := c.seen[k]
	c.mu.Unlock()
	return ok
}

func (c *verifiedCache) add(k [sha256.Size]byte) {
	c.mu.Lock()
	if len(c.seen) >= c.max {
		clear(c.seen)
	}
	c.seen[k] = struct{}{}
	c.mu.Unlock()
}
