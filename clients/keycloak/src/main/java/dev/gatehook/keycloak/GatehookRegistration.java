package dev.gatehook.keycloak;

import jakarta.ws.rs.core.MultivaluedMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.jboss.logging.Logger;
import org.keycloak.authentication.FormAction;
import org.keycloak.authentication.FormContext;
import org.keycloak.authentication.ValidationContext;
import org.keycloak.forms.login.LoginFormsProvider;
import org.keycloak.models.KeycloakSession;
import org.keycloak.models.RealmModel;
import org.keycloak.models.UserModel;
import org.keycloak.models.utils.FormMessage;
import org.keycloak.sessions.AuthenticationSessionModel;

/**
 * A form action of the registration flow: {@code internal_authentication.pre_creation} when
 * the form is validated (a block refuses the registration with its message on the form; the
 * user changes are applied once the user exists) and {@code post_creation} once it exists.
 */
final class GatehookRegistration implements FormAction {
    private static final Logger LOG = Logger.getLogger(GatehookRegistration.class);
    private static final String PENDING_NOTE = "gatehook.registration";

    @Override
    public void buildPage(FormContext context, LoginFormsProvider form) {}

    @Override
    public void validate(ValidationContext context) {
        MultivaluedMap<String, String> form = context.getHttpRequest().getDecodedFormParameters();
        Map<String, Object> user = new LinkedHashMap<>();
        put(user, "username", form.getFirst("username"));
        put(user, "email", form.getFirst("email"));
        put(user, "first_name", form.getFirst("firstName"));
        put(user, "last_name", form.getFirst("lastName"));
        if (!user.containsKey("username") && user.containsKey("email")) {
            user.put("username", user.get("email"));  // email as username realms
        }
        AuthenticationSessionModel session = context.getAuthenticationSession();
        Map<String, String> config = GatehookAuthenticator.config(context.getAuthenticatorConfig());
        GatehookClient client = GatehookClient.shared();
        Settings settings = client.settings().with(config);
        String signin = SignIns.signinId(session);
        session.setUserSessionNote(SignIns.SIGNIN_NOTE, signin);
        Reply reply = client.decide(
                SignIns.tenant(context.getRealm(), config),
                "internal_authentication",
                "pre_creation",
                SignIns.trigger(
                        signin,
                        user,
                        SignIns.request(context.getSession(), context.getConnection().getRemoteAddr(), session.getClient()),
                        SignIns.context(context.getRealm(), session, "registration")),
                settings.deadlineMs);
        if (reply.failed() && !settings.denyWhenUnavailable) {
            context.success();
            return;
        }
        String refusal = reply.failed() ? settings.unavailableMessage
                : reply.is("continue") ? null : reply.userMessage();
        if (refusal != null) {
            context.error("gatehook_refused");
            context.validationError(form, List.of(new FormMessage(null, refusal)));
            return;
        }
        Map<String, Object> pending = new LinkedHashMap<>();
        pending.put("user_updates", reply.userUpdates());
        pending.put("metadata", reply.metadata());
        session.setAuthNote(PENDING_NOTE, GatehookClient.json(pending));
        context.success();
    }

    @Override
    public void success(FormContext context) {
        UserModel user = context.getUser();
        AuthenticationSessionModel session = context.getAuthenticationSession();
        Map<String, Object> pending = GatehookClient.object(session.getAuthNote(PENDING_NOTE));
        session.removeAuthNote(PENDING_NOTE);
        if (user == null) {
            return;
        }
        Map<String, Object> json = new LinkedHashMap<>(pending);
        json.put("decision", "continue");
        SignIns.apply(Reply.of(json), user);
        Map<String, String> config = GatehookAuthenticator.config(context.getAuthenticatorConfig());
        GatehookClient client = GatehookClient.shared();
        Reply after = client.decide(
                SignIns.tenant(context.getRealm(), config),
                "internal_authentication",
                "post_creation",
                SignIns.trigger(
                        SignIns.signinId(session),
                        SignIns.user(user),
                        SignIns.request(context.getSession(), context.getConnection().getRemoteAddr(), session.getClient()),
                        SignIns.context(context.getRealm(), session, "registration")),
                client.settings().with(config).deadlineMs);
        if (after.failed()) {
            LOG.warnf("gatehook: post_creation of %s not decided: %s", user.getId(), after.errorMessage());
        } else if (after.is("continue")) {
            SignIns.apply(after, user);
        } else {
            // the user exists already: too late to refuse it; the audit has the decision
            LOG.infof("gatehook: post_creation of %s decided %s", user.getId(), after.decision());
        }
    }

    private static void put(Map<String, Object> map, String key, String value) {
        if (value != null && !value.isBlank()) {
            map.put(key, value.trim());
        }
    }

    @Override
    public boolean requiresUser() {
        return false;
    }

    @Override
    public boolean configuredFor(KeycloakSession session, RealmModel realm, UserModel user) {
        return true;
    }

    @Override
    public void setRequiredActions(KeycloakSession session, RealmModel realm, UserModel user) {}

    @Override
    public void close() {}
}
