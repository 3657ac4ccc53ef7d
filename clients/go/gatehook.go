// Package gatehook is the Go client of gatehook: a login service asks for a decision at a
// trigger point over NATS (docs/contract.md in the gatehook repository).
//
// The request and reply types follow schemas/trigger-request.json and
// schemas/trigger-reply.json. A call has a deadline (the context's, else the client's
// timeout); on a timeout or a retryable "unavailable" reply it is sent once more with the same
// request_id, so the worker answers it once (same decision, one set of audit events).
package gatehook

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
)

// User is the user the sign-in is about. Extra holds further fields, passed to actions.
type User struct {
	ID            string         `json:"id,omitempty"`
	Username      string         `json:"username,omitempty"`
	Email         string         `json:"email,omitempty"`
	EmailVerified *bool          `json:"email_verified,omitempty"`
	Groups        []string       `json:"groups,omitempty"`
	Metadata      map[string]any `json:"metadata,omitempty"`
}

// RequestInfo describes the HTTP request behind the sign-in.
type RequestInfo struct {
	IP            string   `json:"ip,omitempty"`
	UserAgent     string   `json:"user_agent,omitempty"`
	ApplicationID string   `json:"application_id,omitempty"`
	RiskScore     *float64 `json:"risk_score,omitempty"`
}

// TriggerRequest is a login service's question at a trigger point.
type TriggerRequest struct {
	RequestID  string         `json:"request_id"`
	SigninID   string         `json:"signin_id,omitempty"`
	User       User           `json:"user"`
	Request    RequestInfo    `json:"request"`
	State      map[string]any `json:"state,omitempty"`
	Context    map[string]any `json:"context,omitempty"`
	DeadlineMS int            `json:"deadline_ms,omitempty"`
}

// ActionTrace is one attachment's entry in a reply.
type ActionTrace struct {
	Name       string  `json:"name"`
	Version    string  `json:"version"`
	Outcome    string  `json:"outcome"`
	DurationMS float64 `json:"duration_ms"`
	Error      *string `json:"error"`
}

// MetadataEntry is metadata to append to the user.
type MetadataEntry struct {
	Key   string `json:"key"`
	Value any    `json:"value"`
}

// ReplyError says why no decision could be computed.
type ReplyError struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	Retryable bool   `json:"retryable"`
}

// TriggerReply is the worker's answer.
type TriggerReply struct {
	RequestID      *string             `json:"request_id"`
	Decision       *string             `json:"decision"`
	Reason         *string             `json:"reason"`
	Message        *string             `json:"message"`
	RedirectURL    *string             `json:"redirect_url"`
	Claims         map[string]any      `json:"claims"`
	UserUpdates    map[string]any      `json:"user_updates"`
	Metadata       []MetadataEntry     `json:"metadata"`
	SAMLAttributes map[string][]string `json:"saml_attributes"`
	UserGrants     []map[string]any    `json:"user_grants"`
	FlowRevision   *int                `json:"flow_revision"`
	Actions        []ActionTrace       `json:"actions"`
	Error          *ReplyError         `json:"error"`
	// PinDeferred: MongoDB did not store this new sign-in's pin in time; it was decided on
	// the worker's cached revisions and is pinned when MongoDB is back.
	PinDeferred bool `json:"pin_deferred"`
}

// ErrUnavailable is returned when no decision could be had (after the retry).
var ErrUnavailable = errors.New("gatehook: unavailable")

// BadRequestError is a request the worker refused; it is not retried.
type BadRequestError struct{ Message string }

func (e *BadRequestError) Error() string { return "gatehook: bad request: " + e.Message }

// Client asks gatehook workers for decisions over one NATS connection.
type Client struct {
	nc      *nats.Conn
	timeout time.Duration
	retry   bool
	prefix  string // the trigger subjects' prefix (tests point it elsewhere)
}

// InboxPrefix is the connection option that puts the replies to this login service's
// requests under _INBOX.<user>, the one reply prefix gatehook's deploy/nats.conf lets the
// NATS user read: nats.Connect(url, gatehook.InboxPrefix("acme-login")).
func InboxPrefix(user string) nats.Option {
	return nats.CustomInboxPrefix("_INBOX." + user)
}

// New returns a client with a per-attempt timeout (2 s if zero) and one retry.
func New(nc *nats.Conn, timeout time.Duration) *Client {
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	return &Client{nc: nc, timeout: timeout, retry: true, prefix: "gatehook.v1.trigger"}
}

// Trigger asks for the decision at tenant's flowType.trigger. A request without a
// RequestID gets a fresh one, kept across the retry.
func (c *Client) Trigger(ctx context.Context, tenant, flowType, trigger string, req TriggerRequest) (*TriggerReply, error) {
	if req.RequestID == "" {
		var b [16]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, err
		}
		req.RequestID = hex.EncodeToString(b[:])
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	subject := fmt.Sprintf("%s.%s.%s.%s", c.prefix, tenant, flowType, trigger)
	attempts := 1
	if c.retry {
		attempts = 2
	}
	var last error
	for i := 0; i < attempts; i++ {
		attempt, cancel := context.WithTimeout(ctx, c.timeout)
		msg, err := c.nc.RequestWithContext(attempt, subject, body)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			last = err
			continue // a timeout or no responders: once more, same request_id
		}
		var reply TriggerReply
		if err := json.Unmarshal(msg.Data, &reply); err != nil {
			return nil, fmt.Errorf("gatehook: unreadable reply: %w", err)
		}
		if reply.Error == nil {
			return &reply, nil
		}
		if reply.Error.Code == "bad_request" {
			return nil, &BadRequestError{reply.Error.Message}
		}
		last = fmt.Errorf("%w: %s", ErrUnavailable, reply.Error.Message)
		if !reply.Error.Retryable {
			return nil, last
		}
	}
	return nil, fmt.Errorf("%w: %v", ErrUnavailable, last)
}
