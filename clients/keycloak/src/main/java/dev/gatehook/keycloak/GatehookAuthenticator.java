package dev.gatehook.keycloak;

import jakarta.ws.rs.core.MediaType;
import jakarta.ws.rs.core.MultivaluedMap;
import jakarta.ws.rs.core.Response;
import java.net.URI;
import java.net.URLEncoder;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.UUID;
import org.keycloak.authentication.AuthenticationFlowContext;
import org.keycloak.authentication.AuthenticationFlowError;
import org.keycloak.authentication.Authenticator;
import org.keycloak.authentication.authenticators.browser.OTPFormAuthenticator;
import org.keycloak.models.AuthenticatorConfigModel;
import org.keycloak.models.KeycloakSession;
import org.keycloak.models.RealmModel;
import org.keycloak.models.UserModel;
import org.keycloak.models.credential.OTPCredentialModel;
import org.keycloak.sessions.AuthenticationSessionModel;

/**
 * "gatehook Actions", a step of a browser, direct grant or first broker login flow: sends
 * {@code internal_authentication.post_authentication} (after an identity provider:
 * {@code external_authentication.post_authentication}, with the provider's claims) and
 * applies the decision:
 *
 * <ul>
 *   <li>continue: the user's attribute changes and metadata are stored; the claims go to
 *       the tokens (the claims mapper adds them);
 *   <li>block: Keycloak's page shows the action's message; a direct grant gets {@code
 *       access_denied} with it;
 *   <li>demand_mfa: the OTP form, or OTP set-up when the user has none;
 *   <li>redirect: the browser goes to the URL with {@code state} and {@code continue} (the
 *       URL to come back to); coming back with the same {@code state}, the step asks again
 *       with {@code context.continue: true} and the query in {@code request.query}, as an
 *       Auth0-style action resumes;
 *   <li>no decision in time: the failure policy ({@code on-unavailable}: deny, the default,
 *       with {@code unavailable-message}; or continue).
 * </ul>
 */
final class GatehookAuthenticator implements Authenticator {
    private static final String STATE_NOTE = "gatehook.state";
    private static final String MFA_NOTE = "gatehook.mfa";
    private static final String OTP_FORM = "auth-otp-form";

    @Override
    public void authenticate(AuthenticationFlowContext context) {
        ask(context, null);
    }

    @Override
    public void action(AuthenticationFlowContext context) {
        AuthenticationSessionModel session = context.getAuthenticationSession();
        if (session.getAuthNote(MFA_NOTE) != null) {
            new OTPFormAuthenticator().action(context);
            return;
        }
        String expected = session.getAuthNote(STATE_NOTE);
        if (expected == null) {
            ask(context, null);
            return;
        }
        MultivaluedMap<String, String> query = context.getUriInfo().getQueryParameters();
        String state = query.getFirst("state");
        if (state == null || !MessageDigest.isEqual(
                state.getBytes(StandardCharsets.UTF_8), expected.getBytes(StandardCharsets.UTF_8))) {
            deny(context, "The sign-in could not be resumed.");
            return;
        }
        session.removeAuthNote(STATE_NOTE);
        Map<String, Object> back = new LinkedHashMap<>();
        query.forEach((k, v) -> back.put(k, v.isEmpty() ? "" : v.get(0)));
        ask(context, back);
    }

    /** Ask gatehook (``back``: the query a redirect came back with) and apply the reply. */
    private void ask(AuthenticationFlowContext context, Map<String, Object> back) {
        RealmModel realm = context.getRealm();
        AuthenticationSessionModel session = context.getAuthenticationSession();
        Map<String, String> config = config(context.getAuthenticatorConfig());
        GatehookClient client = GatehookClient.shared();
        Settings settings = client.settings().with(config);
        String signin = SignIns.signinId(session);
        session.setUserSessionNote(SignIns.SIGNIN_NOTE, signin);
        Map<String, Object> request = SignIns.request(
                context.getSession(), context.getConnection().getRemoteAddr(), session.getClient());
        Map<String, Object> ctx = SignIns.context(realm, session, context.getTopLevelFlow().getAlias());
        if (back != null) {
            ctx.put("continue", true);
            request.put("query", back);
        }
        String flowType = ctx.containsKey("idp") ? "external_authentication" : "internal_authentication";
        Reply reply = client.decide(
                SignIns.tenant(realm, config),
                flowType,
                "post_authentication",
                SignIns.trigger(signin, SignIns.user(context.getUser()), request, ctx),
                settings.deadlineMs);
        if (reply.failed()) {
            if (settings.denyWhenUnavailable) {
                deny(context, settings.unavailableMessage);
            } else {
                context.success();
            }
            return;
        }
        switch (reply.decision() == null ? "" : reply.decision()) {
            case "continue" -> {
                UserModel user = context.getUser();
                if (user != null) {
                    SignIns.apply(reply, user);
                }
                keepClaims(session, reply.claims());
                context.success();
            }
            case "demand_mfa" -> mfa(context);
            case "redirect" -> redirect(context, reply.redirectUrl());
            default -> deny(context, reply.userMessage());
        }
    }

    private static void keepClaims(AuthenticationSessionModel session, Map<String, Object> claims) {
        if (claims.isEmpty()) {
            return;
        }
        Map<String, Object> kept = new LinkedHashMap<>(
                GatehookClient.object(session.getUserSessionNotes().get(SignIns.CLAIMS_NOTE)));
        kept.putAll(claims);
        session.setUserSessionNote(SignIns.CLAIMS_NOTE, GatehookClient.json(kept));
    }

    private static boolean directGrant(AuthenticationFlowContext context) {
        return context.getUriInfo().getPath().endsWith("/protocol/openid-connect/token");
    }

    private static void deny(AuthenticationFlowContext context, String message) {
        if (directGrant(context)) {
            Map<String, String> body = Map.of("error", "access_denied", "error_description", message);
            context.failure(
                    AuthenticationFlowError.ACCESS_DENIED,
                    Response.status(Response.Status.BAD_REQUEST)
                            .entity(GatehookClient.json(body))
                            .type(MediaType.APPLICATION_JSON_TYPE)
                            .build());
            return;
        }
        Response page = context.form().setError(message).createErrorPage(Response.Status.FORBIDDEN);
        context.failure(AuthenticationFlowError.ACCESS_DENIED, page);
    }

    private static void mfa(AuthenticationFlowContext context) {
        UserModel user = context.getUser();
        if (directGrant(context) || user == null) {
            deny(context, "Multi-factor authentication is required: sign in in a browser.");
            return;
        }
        if (SignIns.passed(context.getRealm(), context.getAuthenticationSession()).contains(OTP_FORM)) {
            context.success();  // the sign-in has passed an OTP form already: demanded, done
            return;
        }
        if (user.credentialManager().isConfiguredFor(OTPCredentialModel.TYPE)) {
            context.getAuthenticationSession().setAuthNote(MFA_NOTE, "otp");
            new OTPFormAuthenticator().authenticate(context);
            return;
        }
        user.addRequiredAction(UserModel.RequiredAction.CONFIGURE_TOTP);
        context.success();
    }

    private static void redirect(AuthenticationFlowContext context, String url) {
        if (directGrant(context) || url == null) {
            deny(context, "This sign-in needs a browser.");
            return;
        }
        String state = UUID.randomUUID().toString();
        context.getAuthenticationSession().setAuthNote(STATE_NOTE, state);
        String back = context.getActionUrl(context.generateAccessCode()).toString();
        String target = url + (url.contains("?") ? "&" : "?")
                + "state=" + URLEncoder.encode(state, StandardCharsets.UTF_8)
                + "&continue=" + URLEncoder.encode(back, StandardCharsets.UTF_8);
        context.challenge(Response.seeOther(URI.create(target)).build());
    }

    static Map<String, String> config(AuthenticatorConfigModel model) {
        return model == null || model.getConfig() == null ? Map.of() : model.getConfig();
    }

    @Override
    public boolean requiresUser() {
        return true;
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
