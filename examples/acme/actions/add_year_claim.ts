// A module-style action: receives the trigger's input, returns a decision.
interface Input {
  user: { id: string; email?: string };
  request: { ip?: string };
  config: Record<string, unknown>;
}

export async function execute(input: Input) {
  const year: number = new Date().getUTCFullYear();
  console.log(`adding year claim for ${input.user.id}`);
  return { kind: 'continue', claims: { signin_year: year, 'acme:uid': input.user.id } };
}
