package gatehook

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// These tests run against a real worker: tests/e2e/test_clients.py starts one, sets up the
// tenant in GATEHOOK_TEST_TENANT (a flow blocking evil.example), and runs `go test`.
func connect(t *testing.T) (*nats.Conn, string) {
	url, tenant := os.Getenv("GATEHOOK_NATS_URL"), os.Getenv("GATEHOOK_TEST_TENANT")
	if url == "" || tenant == "" {
		t.Fatal("run through tests/e2e/test_clients.py: GATEHOOK_NATS_URL and GATEHOOK_TEST_TENANT are needed")
	}
	nc, err := nats.Connect(url, InboxPrefix("acme-login")) // replies under _INBOX.acme-login
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc, tenant
}

func TestDecisions(t *testing.T) {
	nc, tenant := connect(t)
	c := New(nc, 5*time.Second)
	ctx := context.Background()
	ok, err := c.Trigger(ctx, tenant, "external_authentication", "post_authentication",
		TriggerRequest{User: User{ID: "u1", Email: "ann@acme.com"}})
	if err != nil {
		t.Fatal(err)
	}
	if *ok.Decision != "continue" || ok.Claims["via"] != "go" {
		t.Fatalf("unexpected reply %+v", ok)
	}
	if len(ok.Actions) != 1 || ok.Actions[0].Outcome != "continue" {
		t.Fatalf("unexpected actions %+v", ok.Actions)
	}
	blocked, err := c.Trigger(ctx, tenant, "external_authentication", "post_authentication",
		TriggerRequest{RequestID: "go-block-1", User: User{ID: "u2", Email: "eve@evil.example"}})
	if err != nil {
		t.Fatal(err)
	}
	if *blocked.Decision != "block" || *blocked.Reason != "domain" {
		t.Fatalf("unexpected reply %+v", blocked)
	}
}

func TestBadRequestIsNotRetried(t *testing.T) {
	nc, tenant := connect(t)
	c := New(nc, 5*time.Second)
	_, err := c.Trigger(context.Background(), tenant, "external_authentication", "no_such_trigger",
		TriggerRequest{User: User{ID: "u1"}})
	var bad *BadRequestError
	if !errors.As(err, &bad) {
		t.Fatalf("want a BadRequestError, got %v", err)
	}
}

func TestRetryKeepsTheRequestID(t *testing.T) {
	nc, _ := connect(t)
	// A responder that stays silent the first time: the client retries with the same id.
	var mu sync.Mutex
	seen := []string{}
	sub, err := nc.Subscribe("gohtest.trigger.goretry.external_authentication.post_authentication", func(m *nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, string(m.Data))
		if len(seen) == 2 {
			_ = m.Respond([]byte(`{"request_id":"r","decision":"continue","claims":{},"actions":[],"error":null}`))
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	c := New(nc, 300*time.Millisecond)
	c.prefix = "gohtest.trigger" // away from the worker, which answers every trigger subject
	reply, err := c.Trigger(context.Background(), "goretry", "external_authentication", "post_authentication",
		TriggerRequest{User: User{ID: "u1"}})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if *reply.Decision != "continue" || len(seen) != 2 || seen[0] != seen[1] {
		t.Fatalf("want two identical attempts, got %d: %v", len(seen), seen)
	}
}

func TestDeadline(t *testing.T) {
	nc, _ := connect(t)
	silent, err := nc.Subscribe("gohtest.trigger.>", func(*nats.Msg) {}) // never answers
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Unsubscribe()
	c := New(nc, 5*time.Second)
	c.prefix = "gohtest.trigger"
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	started := time.Now()
	_, err = c.Trigger(ctx, "nobody", "external_authentication", "post_authentication", TriggerRequest{})
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(started) > 2*time.Second {
		t.Fatalf("want an error within the deadline, got %v after %v", err, time.Since(started))
	}
}
