package dev.gatehook.keycloak;

import java.util.LinkedHashMap;
import java.util.Map;
import org.jboss.logging.Logger;
import org.keycloak.models.ClientModel;
import org.keycloak.models.KeycloakSession;
import org.keycloak.models.ProtocolMapperModel;
import org.keycloak.models.RealmModel;
import org.keycloak.models.UserSessionModel;

/**
 * The token triggers the protocol mappers send: {@code complement_token.*} and
 * {@code customize_saml_response.pre_saml_response}, for the user session's user, on the
 * sign-in the authenticator pinned (its authentication session), so one sign-in's steps
 * and tokens run on the same versions.
 */
final class TokenTriggers {
    private static final Logger LOG = Logger.getLogger(TokenTriggers.class);

    private TokenTriggers() {}

    static Reply ask(
            String flowType,
            String trigger,
            ProtocolMapperModel model,
            KeycloakSession session,
            UserSessionModel userSession,
            ClientModel client,
            String scopes) {
        RealmModel realm = session.getContext().getRealm();
        Map<String, String> config = model.getConfig();
        GatehookClient gatehook = GatehookClient.shared();
        String signin = userSession.getNote(SignIns.SIGNIN_NOTE);
        Map<String, Object> request = new LinkedHashMap<>();
        if (userSession.getIpAddress() != null) {
            request.put("ip", userSession.getIpAddress());
        }
        if (client != null) {
            request.put("application_id", client.getClientId());
        }
        Map<String, Object> keycloak = new LinkedHashMap<>();
        keycloak.put("realm", realm.getName());
        if (client != null) {
            keycloak.put("client", client.getClientId());
        }
        if (scopes != null) {
            keycloak.put("scopes", scopes);
        }
        Map<String, Object> context = new LinkedHashMap<>();
        context.put("keycloak", keycloak);
        context.put("claims", claimsOfTheSignIn(userSession));
        Reply reply = gatehook.decide(
                SignIns.tenant(realm, config),
                flowType,
                trigger,
                SignIns.trigger(signin != null ? signin : userSession.getId(),
                        SignIns.user(userSession.getUser()), request, context),
                gatehook.settings().with(config).deadlineMs);
        if (reply.failed() || !reply.is("continue")) {
            // a token is being issued: a mapper cannot refuse it (refuse in the authenticator)
            LOG.warnf("gatehook: %s.%s for %s: %s, no claims added", flowType, trigger, realm.getName(),
                    reply.failed() ? reply.errorMessage() : reply.decision());
        }
        return reply;
    }

    /** The claims the sign-in's own steps decided (the authenticator keeps them). */
    static Map<String, Object> claimsOfTheSignIn(UserSessionModel userSession) {
        return GatehookClient.object(userSession.getNote(SignIns.CLAIMS_NOTE));
    }
}
