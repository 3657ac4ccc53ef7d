package dev.gatehook.keycloak;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.UUID;
import org.keycloak.authentication.authenticators.broker.AbstractIdpAuthenticator;
import org.keycloak.authentication.authenticators.broker.util.SerializedBrokeredIdentityContext;
import org.keycloak.models.AuthenticationExecutionModel;
import org.keycloak.models.ClientModel;
import org.keycloak.models.KeycloakSession;
import org.keycloak.models.RealmModel;
import org.keycloak.models.UserModel;
import org.keycloak.sessions.AuthenticationSessionModel;
import org.keycloak.sessions.CommonClientSessionModel;

/**
 * Keycloak's models as gatehook's trigger requests, and gatehook's user changes applied back:
 * the pure mapping the steps share (docs/integrations/keycloak.md has the table).
 */
final class SignIns {
    /** The user session note that carries the sign-in's id to the token mappers. */
    static final String SIGNIN_NOTE = "gatehook.signin";
    /** The user session note that carries a sign-in step's claims to the token mappers. */
    static final String CLAIMS_NOTE = "gatehook.claims";
    /** The realm attribute that names the realm's tenant (else: the realm's name). */
    static final String TENANT_ATTRIBUTE = "gatehook.tenant";

    private SignIns() {}

    /**
     * The realm's tenant: the execution's {@code tenant} config, else the realm attribute
     * {@code gatehook.tenant}, else the realm's name made a tenant slug.
     */
    static String tenant(RealmModel realm, Map<String, String> config) {
        String given = config == null ? null : Settings.blankToNull(config.get("tenant"));
        if (given == null) {
            given = Settings.blankToNull(realm.getAttribute(TENANT_ATTRIBUTE));
        }
        return slug(given != null ? given : realm.getName());
    }

    static String slug(String name) {
        String s = name.toLowerCase(Locale.ROOT).replaceAll("[^a-z0-9-]", "-").replaceAll("^-+", "");
        return s.isEmpty() ? "realm" : s.length() > 63 ? s.substring(0, 63) : s;
    }

    /** The sign-in: Keycloak's authentication session (one browser's, across its steps). */
    static String signinId(AuthenticationSessionModel session) {
        return session.getParentSession().getId();
    }

    /** gatehook's user for a Keycloak user (null: none yet). */
    static Map<String, Object> user(UserModel user) {
        Map<String, Object> out = new LinkedHashMap<>();
        if (user == null) {
            return out;
        }
        out.put("id", user.getId());
        putIf(out, "username", user.getUsername());
        putIf(out, "email", user.getEmail());
        out.put("email_verified", user.isEmailVerified());
        putIf(out, "first_name", user.getFirstName());
        putIf(out, "last_name", user.getLastName());
        List<String> groups = user.getGroupsStream().map(g -> g.getName()).toList();
        out.put("groups", groups);
        Map<String, Object> metadata = new LinkedHashMap<>();
        user.getAttributes().forEach((k, v) -> {
            if (!List.of("username", "email", "firstName", "lastName").contains(k)) {
                metadata.put(k, v.size() == 1 ? v.get(0) : v);
            }
        });
        out.put("metadata", metadata);
        return out;
    }

    /** The request part: the client's address (Keycloak's, behind its proxy settings),
     * user agent and the OAuth client. */
    static Map<String, Object> request(KeycloakSession session, String remoteAddr, ClientModel client) {
        Map<String, Object> out = new LinkedHashMap<>();
        putIf(out, "ip", remoteAddr);
        String agent = session.getContext().getHttpRequest().getHttpHeaders().getHeaderString("User-Agent");
        putIf(out, "user_agent", agent);
        if (client != null) {
            out.put("application_id", client.getClientId());
        }
        return out;
    }

    /** Keycloak's part of the context: realm, client, the step's flow, the methods the
     * sign-in has passed, and the identity provider's user after a broker sign-in. */
    static Map<String, Object> context(RealmModel realm, AuthenticationSessionModel session, String flow) {
        Map<String, Object> keycloak = new LinkedHashMap<>();
        keycloak.put("realm", realm.getName());
        ClientModel client = session.getClient();
        if (client != null) {
            keycloak.put("client", client.getClientId());
        }
        putIf(keycloak, "flow", flow);
        keycloak.put("methods", passed(realm, session));
        Map<String, Object> context = new LinkedHashMap<>();
        context.put("keycloak", keycloak);
        Map<String, Object> idp = brokered(session);
        if (idp != null) {
            context.put("idp", idp);
            context.put("providerInfo", Map.of("name", idp.get("alias")));
        }
        return context;
    }

    /** The authenticators the sign-in has passed (their provider ids, in no order). */
    static List<String> passed(RealmModel realm, AuthenticationSessionModel session) {
        List<String> methods = new ArrayList<>();
        session.getExecutionStatus().forEach((id, status) -> {
            if (status == CommonClientSessionModel.ExecutionStatus.SUCCESS) {
                AuthenticationExecutionModel execution = realm.getAuthenticationExecutionById(id);
                if (execution != null && execution.getAuthenticator() != null) {
                    methods.add(execution.getAuthenticator());
                }
            }
        });
        return methods;
    }

    /** The identity provider's user of a broker sign-in (first broker login), or null. */
    static Map<String, Object> brokered(AuthenticationSessionModel session) {
        SerializedBrokeredIdentityContext ctx = SerializedBrokeredIdentityContext.readFromAuthenticationSession(
                session, AbstractIdpAuthenticator.BROKERED_CONTEXT_NOTE);
        if (ctx == null) {
            return null;
        }
        Map<String, Object> idp = new LinkedHashMap<>();
        idp.put("alias", ctx.getIdentityProviderId());
        putIf(idp, "user_id", ctx.getBrokerUserId());
        putIf(idp, "username", ctx.getBrokerUsername());
        putIf(idp, "email", ctx.getEmail());
        putIf(idp, "first_name", ctx.getFirstName());
        putIf(idp, "last_name", ctx.getLastName());
        idp.put("claims", ctx.getAttributes());
        return idp;
    }

    /** A trigger request. */
    static Map<String, Object> trigger(
            String signinId, Map<String, Object> user, Map<String, Object> request, Map<String, Object> context) {
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("request_id", UUID.randomUUID().toString());
        putIf(out, "signin_id", signinId);
        out.put("user", user);
        out.put("request", request);
        out.put("context", context);
        return out;
    }

    /** gatehook's user updates and metadata, applied to the Keycloak user. */
    static void apply(Reply reply, UserModel user) {
        reply.userUpdates().forEach((field, value) -> {
            switch (field) {
                case "first_name" -> user.setFirstName(text(value));
                case "last_name" -> user.setLastName(text(value));
                case "email" -> user.setEmail(text(value));
                case "email_verified" -> user.setEmailVerified(Boolean.TRUE.equals(value));
                case "username" -> { } // a Keycloak username is the user's to change
                default -> setAttribute(user, field, value);
            }
        });
        for (Map<String, Object> entry : reply.metadata()) {
            Object key = entry.get("key");
            if (key != null) {
                setAttribute(user, String.valueOf(key), entry.get("value"));
            }
        }
    }

    private static void setAttribute(UserModel user, String name, Object value) {
        if (value instanceof List<?> list) {
            user.setAttribute(name, list.stream().map(SignIns::text).toList());
        } else if (value == null) {
            user.removeAttribute(name);
        } else {
            user.setSingleAttribute(name, text(value));
        }
    }

    private static String text(Object value) {
        return value == null ? null : String.valueOf(value);
    }

    private static void putIf(Map<String, Object> map, String key, Object value) {
        if (value != null) {
            map.put(key, value);
        }
    }
}
