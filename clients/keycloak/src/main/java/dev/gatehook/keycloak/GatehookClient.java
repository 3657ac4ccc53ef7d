package dev.gatehook.keycloak;

import com.fasterxml.jackson.core.type.TypeReference;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.nats.client.Connection;
import io.nats.client.Message;
import io.nats.client.Nats;
import io.nats.client.Options;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.security.GeneralSecurityException;
import java.security.KeyStore;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import java.time.Duration;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import javax.net.ssl.SSLContext;
import javax.net.ssl.TrustManagerFactory;
import org.jboss.logging.Logger;

/**
 * One NATS connection per Keycloak process, shared by every step of every realm, asking
 * gatehook's workers for decisions as a login service does: a request on
 * {@code gatehook.v1.trigger.<tenant>.<flow_type>.<trigger>} with the step's deadline, the
 * reply on the role's own inbox. Never blocks a step past its deadline: a connection that
 * cannot be made, no worker, no reply in time or a reply that cannot be read is a {@link
 * Reply#unavailable} the step's failure policy decides on.
 */
final class GatehookClient {
    private static final Logger LOG = Logger.getLogger(GatehookClient.class);
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final TypeReference<Map<String, Object>> OBJECT = new TypeReference<>() {};
    private static final Object LOCK = new Object();
    private static volatile GatehookClient shared;

    private final Settings settings;
    private volatile Connection connection;
    private volatile long retryAfter;

    private GatehookClient(Settings settings) {
        this.settings = settings;
    }

    /** The process's client, made on first use from the SPI options. */
    static GatehookClient shared() {
        GatehookClient client = shared;
        if (client == null) {
            synchronized (LOCK) {
                client = shared;
                if (client == null) {
                    client = new GatehookClient(Settings.fromSpi());
                    shared = client;
                }
            }
        }
        return client;
    }

    /** Close the process's connection (the factory's close, at shutdown). */
    static void closeShared() {
        synchronized (LOCK) {
            GatehookClient client = shared;
            shared = null;
            if (client != null && client.connection != null) {
                try {
                    client.connection.close();
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
            }
        }
    }

    Settings settings() {
        return settings;
    }

    /**
     * gatehook's decision at {@code flowType.trigger} for {@code tenant}, within {@code
     * deadlineMs}; {@link Reply#unavailable} when there is none in time.
     */
    Reply decide(
            String tenant, String flowType, String trigger, Map<String, Object> request, long deadlineMs) {
        long started = System.nanoTime();
        Map<String, Object> body = new LinkedHashMap<>(request);
        body.put("deadline_ms", deadlineMs);
        String subject = "gatehook.v1.trigger." + tenant + "." + flowType + "." + trigger;
        Connection nc;
        try {
            nc = connection(deadlineMs);
        } catch (IOException | GeneralSecurityException e) {
            LOG.warnf("gatehook: cannot connect to NATS at %s: %s", settings.natsUrl, e.getMessage());
            return Reply.unavailable("gatehook cannot be reached");
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return Reply.unavailable("interrupted");
        }
        long left = deadlineMs - TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - started);
        if (left <= 0) {
            return Reply.unavailable("no decision within " + deadlineMs + " ms");
        }
        try {
            byte[] payload = JSON.writeValueAsBytes(body);
            CompletableFuture<Message> pending = nc.requestWithTimeout(subject, payload, Duration.ofMillis(left));
            Message reply = pending.get(left, TimeUnit.MILLISECONDS);
            return Reply.of(JSON.readValue(reply.getData(), OBJECT));
        } catch (TimeoutException e) {
            return Reply.unavailable("no decision within " + deadlineMs + " ms");
        } catch (ExecutionException | java.util.concurrent.CancellationException e) {
            // no responders (no worker subscribed) and a timeout inside the client end here
            return Reply.unavailable("no gatehook worker answered");
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return Reply.unavailable("interrupted");
        } catch (IOException | RuntimeException e) {
            LOG.warnf("gatehook: %s.%s for %s failed: %s", flowType, trigger, tenant, e.toString());
            return Reply.unavailable("gatehook's reply could not be read");
        }
    }

    private Connection connection(long deadlineMs)
            throws IOException, InterruptedException, GeneralSecurityException {
        Connection nc = connection;
        if (nc != null && nc.getStatus() != Connection.Status.CLOSED) {
            return nc;
        }
        synchronized (this) {
            nc = connection;
            if (nc != null && nc.getStatus() != Connection.Status.CLOSED) {
                return nc;
            }
            if (System.nanoTime() < retryAfter) {
                throw new IOException("the last attempt failed a moment ago");
            }
            try {
                nc = Nats.connect(options(deadlineMs));
            } catch (IOException | InterruptedException | GeneralSecurityException e) {
                retryAfter = System.nanoTime() + TimeUnit.SECONDS.toNanos(1);
                throw e;
            }
            connection = nc;
            return nc;
        }
    }

    private Options options(long deadlineMs) throws IOException, GeneralSecurityException {
        Options.Builder b = Options.builder()
                .connectionName("keycloak-gatehook")
                .inboxPrefix(settings.inboxPrefix)
                .connectionTimeout(Duration.ofMillis(Math.min(2000, Math.max(200, deadlineMs))))
                .maxReconnects(-1)
                .noEcho();
        for (String server : settings.natsUrl.split(",")) {
            if (!server.isBlank()) {
                b.server(server.trim());
            }
        }
        if (settings.credsFile != null) {
            b.authHandler(Nats.credentials(settings.credsFile));
        } else if (settings.user != null) {
            b.userInfo(settings.user, settings.password == null ? "" : settings.password);
        }
        if (settings.tlsCaFile != null) {
            b.sslContext(trusting(settings.tlsCaFile));
        }
        return b.build();
    }

    private static SSLContext trusting(String pemFile) throws IOException, GeneralSecurityException {
        KeyStore store = KeyStore.getInstance(KeyStore.getDefaultType());
        store.load(null, null);
        try (InputStream in = new FileInputStream(pemFile)) {
            int i = 0;
            for (Certificate cert : CertificateFactory.getInstance("X.509").generateCertificates(in)) {
                store.setCertificateEntry("gatehook-ca-" + i++, cert);
            }
        }
        TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(store);
        SSLContext ctx = SSLContext.getInstance("TLS");
        ctx.init(null, tmf.getTrustManagers(), null);
        return ctx;
    }

    /** JSON text of {@code value} (for notes kept on Keycloak's sessions). */
    static String json(Object value) {
        try {
            return JSON.writeValueAsString(value);
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
    }

    /** The object a note holds (empty when none, or not readable). */
    static Map<String, Object> object(String text) {
        if (text == null || text.isEmpty()) {
            return Map.of();
        }
        try {
            return JSON.readValue(text, OBJECT);
        } catch (IOException e) {
            return Map.of();
        }
    }
}
