package dev.gatehook.keycloak;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.keycloak.models.ClientSessionContext;
import org.keycloak.models.KeycloakSession;
import org.keycloak.models.ProtocolMapperModel;
import org.keycloak.models.UserSessionModel;
import org.keycloak.protocol.oidc.mappers.AbstractOIDCProtocolMapper;
import org.keycloak.protocol.oidc.mappers.OIDCAccessTokenMapper;
import org.keycloak.protocol.oidc.mappers.OIDCAttributeMapperHelper;
import org.keycloak.protocol.oidc.mappers.OIDCIDTokenMapper;
import org.keycloak.protocol.oidc.mappers.UserInfoTokenMapper;
import org.keycloak.provider.ProviderConfigProperty;
import org.keycloak.representations.AccessToken;
import org.keycloak.representations.IDToken;

/**
 * "gatehook claims", an OIDC protocol mapper: the access token's claims from {@code
 * complement_token.pre_access_token_creation} ({@code claims} and {@code
 * access_token_claims}), the ID token's and userinfo's from {@code pre_userinfo_creation};
 * each on top of the claims the sign-in's own steps decided.
 */
public final class GatehookClaimsMapper extends AbstractOIDCProtocolMapper
        implements OIDCAccessTokenMapper, OIDCIDTokenMapper, UserInfoTokenMapper {
    static final String ID = "gatehook-claims-mapper";

    @Override
    public String getId() {
        return ID;
    }

    @Override
    public String getDisplayCategory() {
        return TOKEN_MAPPER_CATEGORY;
    }

    @Override
    public String getDisplayType() {
        return "gatehook claims";
    }

    @Override
    public String getHelpText() {
        return "Adds the claims of the realm's gatehook Actions at complement_token (access"
                + " token: pre_access_token_creation; ID token and userinfo: pre_userinfo_creation).";
    }

    @Override
    public List<ProviderConfigProperty> getConfigProperties() {
        List<ProviderConfigProperty> properties = new ArrayList<>(
                GatehookAuthenticatorFactory.executionProperties().subList(0, 2));
        OIDCAttributeMapperHelper.addIncludeInTokensConfig(properties, GatehookClaimsMapper.class);
        return properties;
    }

    @Override
    public AccessToken transformAccessToken(
            AccessToken token, ProtocolMapperModel model, KeycloakSession session,
            UserSessionModel userSession, ClientSessionContext ctx) {
        if (OIDCAttributeMapperHelper.includeInAccessToken(model)) {
            Reply reply = ask("pre_access_token_creation", model, session, userSession, ctx);
            Map<String, Object> claims = new LinkedHashMap<>(TokenTriggers.claimsOfTheSignIn(userSession));
            if (reply.is("continue")) {
                claims.putAll(reply.claims());
                claims.putAll(reply.accessTokenClaims());
            }
            claims.forEach(token::setOtherClaims);
        }
        return token;
    }

    @Override
    public IDToken transformIDToken(
            IDToken token, ProtocolMapperModel model, KeycloakSession session,
            UserSessionModel userSession, ClientSessionContext ctx) {
        if (OIDCAttributeMapperHelper.includeInIDToken(model)) {
            idClaims(model, session, userSession, ctx).forEach(token::setOtherClaims);
        }
        return token;
    }

    @Override
    public AccessToken transformUserInfoToken(
            AccessToken token, ProtocolMapperModel model, KeycloakSession session,
            UserSessionModel userSession, ClientSessionContext ctx) {
        if (OIDCAttributeMapperHelper.includeInUserInfo(model)) {
            idClaims(model, session, userSession, ctx).forEach(token::setOtherClaims);
        }
        return token;
    }

    private static Map<String, Object> idClaims(
            ProtocolMapperModel model, KeycloakSession session, UserSessionModel userSession,
            ClientSessionContext ctx) {
        Reply reply = ask("pre_userinfo_creation", model, session, userSession, ctx);
        Map<String, Object> claims = new LinkedHashMap<>(TokenTriggers.claimsOfTheSignIn(userSession));
        if (reply.is("continue")) {
            claims.putAll(reply.claims());
        }
        return claims;
    }

    private static Reply ask(
            String trigger, ProtocolMapperModel model, KeycloakSession session,
            UserSessionModel userSession, ClientSessionContext ctx) {
        return TokenTriggers.ask(
                "complement_token", trigger, model, session, userSession,
                ctx.getClientSession().getClient(), ctx.getScopeString());
    }
}
