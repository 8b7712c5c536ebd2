//! Modules a script may import besides `px`: `pxviews`, this project's own PxL library
//! (`pxl/lib/pxviews.pxl`) of the views Pixie's scripts build on.

use super::*;

/// The source of `pxviews`.
const PXVIEWS: &str = include_str!("../../lib/pxviews.pxl");

/// The modules there are, with their sources.
const MODULES: &[(&str, &str)] = &[("pxviews", PXVIEWS)];

impl Compiler<'_> {
    /// `import <name>`: `px` itself, or a module whose functions become
    /// `<name>.<function>`.
    pub(super) fn import(&mut self, at: &ast::Stmt, module: &str) -> Result<Value> {
        if module == "px" {
            return Ok(Value::PxModule);
        }
        let Some((_, source)) = MODULES.iter().find(|(name, _)| *name == module) else {
            let known: Vec<&str> = MODULES.iter().map(|(name, _)| *name).collect();
            return Err(self.error(
                at,
                format!(
                    "cannot import {module}: PxL scripts import px and {}",
                    known.join(", ")
                ),
            ));
        };
        let parsed = parse(source, Mode::Module, module)
            .map_err(|e| self.error(at, format!("module {module} does not parse: {}", e.error)))?;
        let ast::Mod::Module(parsed) = parsed else {
            return Err(self.error(at, format!("module {module} is not a module")));
        };
        for statement in parsed.body {
            if let ast::Stmt::FunctionDef(def) = statement {
                self.functions.insert(format!("{module}.{}", def.name), def);
            }
        }
        Ok(Value::Module(module.to_owned()))
    }

    /// `module.name`: one of the module's functions.
    pub(super) fn module_function(
        &self,
        at: &ast::Expr,
        module: &str,
        name: &str,
    ) -> Result<Value> {
        let qualified = format!("{module}.{name}");
        if name.starts_with('_') || !self.functions.contains_key(&qualified) {
            return Err(self.error(at, format!("{module} has no function '{name}'")));
        }
        Ok(Value::UserFunction(qualified))
    }

    /// The module a function of the form `module.name` belongs to, with its source.
    pub(super) fn module_of(function: &str) -> Option<(&'static str, &'static str)> {
        let (module, _) = function.split_once('.')?;
        MODULES.iter().find(|(name, _)| *name == module).copied()
    }
}
