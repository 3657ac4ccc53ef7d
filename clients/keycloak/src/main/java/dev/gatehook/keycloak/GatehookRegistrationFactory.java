package dev.gatehook.keycloak;

import java.util.List;
import org.keycloak.Config;
import org.keycloak.authentication.FormAction;
import org.keycloak.authentication.FormActionFactory;
import org.keycloak.models.AuthenticationExecutionModel;
import org.keycloak.models.KeycloakSession;
import org.keycloak.models.KeycloakSessionFactory;
import org.keycloak.provider.ProviderConfigProperty;

/** The registration form action ({@code form-action/gatehook-registration}). */
public final class GatehookRegistrationFactory implements FormActionFactory {
    static final String ID = "gatehook-registration";
    private static final GatehookRegistration SINGLETON = new GatehookRegistration();
    private static final AuthenticationExecutionModel.Requirement[] CHOICES = {
        AuthenticationExecutionModel.Requirement.REQUIRED, AuthenticationExecutionModel.Requirement.DISABLED,
    };

    @Override
    public String getId() {
        return ID;
    }

    @Override
    public String getDisplayType() {
        return "gatehook Actions: registration";
    }

    @Override
    public String getReferenceCategory() {
        return "gatehook";
    }

    @Override
    public String getHelpText() {
        return "Runs the realm's gatehook Actions at pre_creation (a block refuses the"
                + " registration with its message) and post_creation.";
    }

    @Override
    public boolean isConfigurable() {
        return true;
    }

    @Override
    public AuthenticationExecutionModel.Requirement[] getRequirementChoices() {
        return CHOICES.clone();
    }

    @Override
    public boolean isUserSetupAllowed() {
        return false;
    }

    @Override
    public List<ProviderConfigProperty> getConfigProperties() {
        return GatehookAuthenticatorFactory.executionProperties();
    }

    @Override
    public FormAction create(KeycloakSession session) {
        return SINGLETON;
    }

    @Override
    public void init(Config.Scope config) {}

    @Override
    public void postInit(KeycloakSessionFactory factory) {}

    @Override
    public void close() {}
}
