package dev.gatehook.keycloak;

import java.util.List;
import org.keycloak.Config;
import org.keycloak.authentication.Authenticator;
import org.keycloak.authentication.AuthenticatorFactory;
import org.keycloak.models.AuthenticationExecutionModel;
import org.keycloak.models.KeycloakSession;
import org.keycloak.models.KeycloakSessionFactory;
import org.keycloak.provider.ProviderConfigProperty;
import org.keycloak.provider.ProviderConfigurationBuilder;

/**
 * The "gatehook Actions" authenticator ({@code authenticator/gatehook}); its SPI options
 * configure the whole extension (see {@link Settings}).
 */
public final class GatehookAuthenticatorFactory implements AuthenticatorFactory {
    static final String ID = Settings.PROVIDER;
    private static final GatehookAuthenticator SINGLETON = new GatehookAuthenticator();
    private static final AuthenticationExecutionModel.Requirement[] CHOICES = {
        AuthenticationExecutionModel.Requirement.REQUIRED,
        AuthenticationExecutionModel.Requirement.ALTERNATIVE,
        AuthenticationExecutionModel.Requirement.DISABLED,
    };

    /** The execution's own settings (the admin console's config of the step). */
    static List<ProviderConfigProperty> executionProperties() {
        return ProviderConfigurationBuilder.create()
                .property().name("tenant").label("Tenant").type(ProviderConfigProperty.STRING_TYPE)
                .helpText("gatehook's tenant for this realm (default: the realm attribute"
                        + " gatehook.tenant, else the realm's name)").add()
                .property().name("deadline-ms").label("Deadline (ms)").type(ProviderConfigProperty.STRING_TYPE)
                .helpText("answer within this (default: the SPI option, 2000)").add()
                .property().name("on-unavailable").label("When gatehook cannot decide")
                .type(ProviderConfigProperty.LIST_TYPE).options("deny", "continue").defaultValue("deny")
                .helpText("deny the sign-in (default) or let it continue").add()
                .property().name("unavailable-message").label("Message when denied for that")
                .type(ProviderConfigProperty.STRING_TYPE).add()
                .build();
    }

    @Override
    public String getId() {
        return ID;
    }

    @Override
    public String getDisplayType() {
        return "gatehook Actions";
    }

    @Override
    public String getReferenceCategory() {
        return "gatehook";
    }

    @Override
    public String getHelpText() {
        return "Runs the realm's gatehook Actions after the user is known: continue, block with"
                + " the action's message, demand OTP, or redirect and resume.";
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
        return executionProperties();
    }

    @Override
    public List<ProviderConfigProperty> getConfigMetadata() {
        return ProviderConfigurationBuilder.create()
                .property().name("nats-url").type("string").defaultValue("nats://127.0.0.1:4222")
                .helpText("gatehook's NATS servers, comma-separated").add()
                .property().name("nats-user").type("string").helpText("the login service's NATS user").add()
                .property().name("nats-password").type("string").secret(true).helpText("its password").add()
                .property().name("nats-creds-file").type("string").helpText("or a .creds file").add()
                .property().name("nats-inbox-prefix").type("string")
                .helpText("reply subjects' prefix (default _INBOX.<user>)").add()
                .property().name("nats-tls-ca-file").type("string").helpText("PEM CA: TLS to NATS").add()
                .property().name("deadline-ms").type("int").defaultValue(2000)
                .helpText("a step answers within this").add()
                .property().name("on-unavailable").type("string").defaultValue("deny")
                .helpText("deny or continue when gatehook cannot decide").add()
                .property().name("unavailable-message").type("string")
                .helpText("what the user reads when denied for that").add()
                .build();
    }

    @Override
    public Authenticator create(KeycloakSession session) {
        return SINGLETON;
    }

    @Override
    public void init(Config.Scope config) {}

    @Override
    public void postInit(KeycloakSessionFactory factory) {}

    @Override
    public void close() {
        GatehookClient.closeShared();
    }
}
