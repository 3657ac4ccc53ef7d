package dev.gatehook.keycloak;

import java.util.Collections;
import java.util.List;
import java.util.Map;

/**
 * A trigger reply of gatehook's contract (docs/contract.md), the parts a Keycloak step uses;
 * or the failure to get one ({@link #unavailable}).
 */
record Reply(
        String decision,
        String reason,
        String message,
        String redirectUrl,
        Map<String, Object> claims,
        Map<String, Object> userUpdates,
        List<Map<String, Object>> metadata,
        Map<String, Object> accessTokenClaims,
        Map<String, List<String>> samlAttributes,
        String errorCode,
        String errorMessage) {

    static Reply unavailable(String message) {
        return new Reply(
                null, null, null, null, Map.of(), Map.of(), List.of(), Map.of(), Map.of(),
                "unavailable", message);
    }

    @SuppressWarnings("unchecked")
    static Reply of(Map<String, Object> json) {
        Map<String, Object> error = (Map<String, Object>) json.get("error");
        return new Reply(
                (String) json.get("decision"),
                (String) json.get("reason"),
                (String) json.get("message"),
                (String) json.get("redirect_url"),
                map(json.get("claims")),
                map(json.get("user_updates")),
                json.get("metadata") instanceof List<?> l ? (List<Map<String, Object>>) l : List.of(),
                map(json.get("access_token_claims")),
                json.get("saml_attributes") instanceof Map<?, ?> m
                        ? (Map<String, List<String>>) m
                        : Map.of(),
                error == null ? null : String.valueOf(error.get("code")),
                error == null ? null : String.valueOf(error.get("message")));
    }

    @SuppressWarnings("unchecked")
    private static Map<String, Object> map(Object value) {
        return value instanceof Map<?, ?> m ? (Map<String, Object>) m : Collections.emptyMap();
    }

    /** No decision: gatehook could not be asked, or answered with an error. */
    boolean failed() {
        return errorCode != null;
    }

    boolean is(String kind) {
        return kind.equals(decision);
    }

    /** What the user reads for a reply that is not continue. */
    String userMessage() {
        if ("action_error".equals(reason)) {
            return "Sign-in refused: a sign-in check could not be completed.";
        }
        if (message != null && !message.isBlank()) {
            return message;
        }
        return reason != null ? reason : "Sign-in refused.";
    }
}
