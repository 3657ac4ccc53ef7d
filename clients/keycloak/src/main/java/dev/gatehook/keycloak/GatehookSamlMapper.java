package dev.gatehook.keycloak;

import java.util.List;
import java.util.Map;
import org.keycloak.dom.saml.v2.assertion.AttributeStatementType;
import org.keycloak.dom.saml.v2.assertion.AttributeType;
import org.keycloak.models.AuthenticatedClientSessionModel;
import org.keycloak.models.KeycloakSession;
import org.keycloak.models.ProtocolMapperModel;
import org.keycloak.models.UserSessionModel;
import org.keycloak.protocol.saml.mappers.AbstractSAMLProtocolMapper;
import org.keycloak.protocol.saml.mappers.AttributeStatementHelper;
import org.keycloak.protocol.saml.mappers.SAMLAttributeStatementMapper;
import org.keycloak.provider.ProviderConfigProperty;
import org.keycloak.saml.common.constants.JBossSAMLURIConstants;

/**
 * "gatehook SAML attributes", a SAML protocol mapper: the attributes of {@code
 * customize_saml_response.pre_saml_response} ({@code saml_attributes}: name -> values) added
 * to the assertion's attribute statement, in the basic name format.
 */
public final class GatehookSamlMapper extends AbstractSAMLProtocolMapper implements SAMLAttributeStatementMapper {
    static final String ID = "gatehook-saml-mapper";

    @Override
    public String getId() {
        return ID;
    }

    @Override
    public String getDisplayCategory() {
        return AttributeStatementHelper.ATTRIBUTE_STATEMENT_CATEGORY;
    }

    @Override
    public String getDisplayType() {
        return "gatehook SAML attributes";
    }

    @Override
    public String getHelpText() {
        return "Adds the attributes of the realm's gatehook Actions at pre_saml_response.";
    }

    @Override
    public List<ProviderConfigProperty> getConfigProperties() {
        return GatehookAuthenticatorFactory.executionProperties().subList(0, 2);
    }

    @Override
    public void transformAttributeStatement(
            AttributeStatementType statement, ProtocolMapperModel model, KeycloakSession session,
            UserSessionModel userSession, AuthenticatedClientSessionModel clientSession) {
        Reply reply = TokenTriggers.ask(
                "customize_saml_response", "pre_saml_response", model, session, userSession,
                clientSession.getClient(), null);
        if (!reply.is("continue")) {
            return;
        }
        for (Map.Entry<String, List<String>> entry : reply.samlAttributes().entrySet()) {
            AttributeType attribute = new AttributeType(entry.getKey());
            attribute.setNameFormat(JBossSAMLURIConstants.ATTRIBUTE_FORMAT_BASIC.get());
            entry.getValue().forEach(attribute::addAttributeValue);
            statement.addAttribute(new AttributeStatementType.ASTChoiceType(attribute));
        }
    }
}
