package dev.gatehook.keycloak;

import java.util.Map;
import org.keycloak.Config;

/**
 * How the extension reaches gatehook and what it does when gatehook cannot decide, from
 * Keycloak's SPI options ({@code --spi-authenticator--gatehook--<option>}), overridable per
 * execution by its authenticator config (tenant, deadline, failure policy).
 *
 * <ul>
 *   <li>{@code nats-url}: gatehook's NATS servers, comma-separated (default
 *       nats://127.0.0.1:4222);
 *   <li>{@code nats-user} / {@code nats-password}, or {@code nats-creds-file}: the login
 *       service's NATS role (deploy/nats-roles.conf);
 *   <li>{@code nats-inbox-prefix}: where replies come (default {@code _INBOX.<user>}, the
 *       one subject the role may read);
 *   <li>{@code nats-tls-ca-file}: a PEM CA to check gatehook's NATS with (TLS on);
 *   <li>{@code deadline-ms}: a step answers within it (default 2000);
 *   <li>{@code on-unavailable}: {@code deny} (default) or {@code continue} when no decision
 *       came in time;
 *   <li>{@code unavailable-message}: what the user reads when denied for that.
 * </ul>
 */
final class Settings {
    static final String SPI = "authenticator";
    static final String PROVIDER = "gatehook";

    final String natsUrl;
    final String user;
    final String password;
    final String credsFile;
    final String inboxPrefix;
    final String tlsCaFile;
    final long deadlineMs;
    final boolean denyWhenUnavailable;
    final String unavailableMessage;

    private Settings(
            String natsUrl,
            String user,
            String password,
            String credsFile,
            String inboxPrefix,
            String tlsCaFile,
            long deadlineMs,
            boolean denyWhenUnavailable,
            String unavailableMessage) {
        this.natsUrl = natsUrl;
        this.user = user;
        this.password = password;
        this.credsFile = credsFile;
        this.inboxPrefix = inboxPrefix;
        this.tlsCaFile = tlsCaFile;
        this.deadlineMs = deadlineMs;
        this.denyWhenUnavailable = denyWhenUnavailable;
        this.unavailableMessage = unavailableMessage;
    }

    /** The settings of the {@code authenticator/gatehook} provider scope. */
    static Settings fromSpi() {
        return from(Config.scope(SPI, PROVIDER));
    }

    static Settings from(Config.Scope scope) {
        String user = blankToNull(scope.get("nats-user"));
        String prefix = blankToNull(scope.get("nats-inbox-prefix"));
        if (prefix == null) {
            prefix = user != null ? "_INBOX." + user : "_INBOX";
        }
        return new Settings(
                scope.get("nats-url", "nats://127.0.0.1:4222"),
                user,
                blankToNull(scope.get("nats-password")),
                blankToNull(scope.get("nats-creds-file")),
                prefix,
                blankToNull(scope.get("nats-tls-ca-file")),
                Math.max(50, scope.getLong("deadline-ms", 2000L)),
                !"continue".equalsIgnoreCase(scope.get("on-unavailable", "deny")),
                scope.get("unavailable-message", "Sign-in is not available right now; please try again."));
    }

    /** These settings with an execution's own config (its keys as the SPI options'). */
    Settings with(Map<String, String> config) {
        if (config == null || config.isEmpty()) {
            return this;
        }
        String deadline = blankToNull(config.get("deadline-ms"));
        String policy = blankToNull(config.get("on-unavailable"));
        String message = blankToNull(config.get("unavailable-message"));
        return new Settings(
                natsUrl,
                user,
                password,
                credsFile,
                inboxPrefix,
                tlsCaFile,
                deadline != null ? Math.max(50, Long.parseLong(deadline.trim())) : deadlineMs,
                policy != null ? !"continue".equalsIgnoreCase(policy) : denyWhenUnavailable,
                message != null ? message : unavailableMessage);
    }

    static String blankToNull(String value) {
        return value == null || value.isBlank() ? null : value;
    }
}
